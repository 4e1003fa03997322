"""Captions -> object/attribute tags -> vocabulary -> labels -> tag embeddings, for training.

    # one process: parse, merge, embed
    python tools/parse_tags.py all CAPTIONS... --out OUT [--backend vllm|nltk] [--clip ViT-B-16 --pretrained openai]
    # a cluster: one parse per GPU (shard id/count also read from SLURM_PROCID/SLURM_NTASKS or RANK/WORLD_SIZE)
    python tools/parse_tags.py parse CAPTIONS... --out OUT --num-shards 16 --shard-id 3 --model Qwen/Qwen2.5-7B-Instruct
    python tools/parse_tags.py merge OUT [--top-k-objects 10000 --top-k-attributes 1000 | --vocab-from ram_tags.txt]
    python tools/parse_tags.py embed OUT --clip ViT-B-16 --pretrained openai
    # RAM++ tag descriptions (5 prompts x 10 samples per tag), then embeddings from them (docs/tagging.md)
    python tools/parse_tags.py describe OUT --model Qwen/Qwen2.5-7B-Instruct [--tags taglist.txt]
    python tools/parse_tags.py embed OUT --text both
    # the authors' released CC12M tags instead of parsing: labels keyed by image URL (train with label_key="url")
    python tools/parse_tags.py import-released object_list.csv CC12M_url_object_index.json --out OUT

CAPTIONS: img2dataset output directories, CC12M .tsv files (url<TAB>caption) or .jsonl ({"key", "caption"}).
Output layout: docs/formats.md. Interrupted runs resume where they stopped when rerun with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tagalign.tags.normalize import NON_VISUAL_WORDS  # noqa: E402
from tagalign.tags.parse import parse_captions, shard_from_environment  # noqa: E402

DEFAULT_LLM = "lmsys/vicuna-33b-v1.3"


def _add_llm_args(parser: argparse.ArgumentParser, max_tokens: int) -> None:
    parser.add_argument("--model", default=DEFAULT_LLM, help="vLLM model (name or local directory)")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=max_tokens, help="answer length limit")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--enforce-eager", action="store_true",
                        help="skip vLLM's graph compilation and capture: faster start, slower generation")


def _add_parse_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="img2dataset dirs, .tsv, .jsonl, .parquet or .tar files")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--backend", choices=["vllm", "nltk"], default="vllm")
    _add_llm_args(parser, 256)
    parser.add_argument("--num-shards", type=int, help="total shards (default: SLURM/torchrun world size or 1)")
    parser.add_argument("--shard-id", type=int, help="this shard (default: SLURM/torchrun rank or 0)")
    parser.add_argument("--chunk-size", type=int, default=10_000, help="captions per part file (resume unit)")
    parser.add_argument("--stop-list", action="store_true", help="drop non-visual words (photo, stock, view, ...)")


def _add_merge_args(parser: argparse.ArgumentParser, with_out: bool) -> None:
    if with_out:
        parser.add_argument("out", help="output directory of the parse stage")
    parser.add_argument("--top-k-objects", type=int, default=10_000)
    parser.add_argument("--top-k-attributes", type=int, default=1_000)
    parser.add_argument("--min-count", type=int, default=1)
    parser.add_argument("--vocab-from", help="use this tag list (csv with a 'tag' column, or one tag per line)")


def _add_embed_args(parser: argparse.ArgumentParser, with_out: bool) -> None:
    if with_out:
        parser.add_argument("out")
    parser.add_argument("--clip", default=None if not with_out else "ViT-B-16",
                        help="CLIP text tower for tag embeddings" + ("" if with_out else " (omit to skip embedding)"))
    parser.add_argument("--pretrained", default="openai")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--text", choices=["template", "descriptions", "both"], default="template",
                        help="tag text: 'a photo of a {tag}.', the LLM-description ensemble (RAM++), or both")
    parser.add_argument("--descriptions", help="description file in RAM++'s layout (default OUT/tag_descriptions.json)")


def _parser(args: argparse.Namespace):
    stop = NON_VISUAL_WORDS if args.stop_list else ()
    if args.backend == "nltk":
        from tagalign.tags.parsers import NLTKParser

        return NLTKParser(stop)
    from tagalign.tags.parsers import LLMParser, VLLMGenerator

    generator = VLLMGenerator(args.model, tensor_parallel_size=args.tensor_parallel_size,
                              max_model_len=args.max_model_len, max_tokens=args.max_tokens,
                              gpu_memory_utilization=args.gpu_memory_utilization, dtype=args.dtype,
                              enforce_eager=args.enforce_eager)
    return LLMParser(generator, stop)


def run_parse(args: argparse.Namespace) -> dict:
    env_shards, env_id = shard_from_environment()
    num_shards = args.num_shards or env_shards
    shard_id = args.shard_id if args.shard_id is not None else env_id
    return parse_captions(args.inputs, args.out, _parser(args), num_shards, shard_id, args.chunk_size)


def run_merge(args: argparse.Namespace) -> dict:
    from tagalign.tags.merge import merge_parsed

    return merge_parsed(args.out, args.top_k_objects, args.top_k_attributes, args.min_count, args.vocab_from)


def run_embed(args: argparse.Namespace) -> None:
    from tagalign.tags.embed import embed_vocab

    path = embed_vocab(args.out, args.clip, args.pretrained or None, device=args.device, text=args.text,
                       descriptions=args.descriptions)
    print(f"wrote {path}")


def run_describe(args: argparse.Namespace) -> dict:
    from tagalign.tagging.describe import DescribeSettings, VLLMDescriber, describe_tags, read_tag_file
    from tagalign.tags.vocab import TagVocab

    try:  # every input is checked before the engine starts
        if args.tags:
            tags = read_tag_file(args.tags)
        else:
            tags = TagVocab.load(Path(args.out) / "vocab.csv").tags
            if not tags:
                raise ValueError(f"{Path(args.out) / 'vocab.csv'} holds no tag")
        settings = DescribeSettings(samples=args.samples, temperature=args.temperature, max_tokens=args.max_tokens,
                                    seed=args.seed, chunk_size=args.chunk_size)
    except (OSError, ValueError) as err:
        sys.exit(f"Not starting: {err}")
    describer = VLLMDescriber(args.model, tensor_parallel_size=args.tensor_parallel_size,
                              max_model_len=args.max_model_len, gpu_memory_utilization=args.gpu_memory_utilization,
                              dtype=args.dtype, enforce_eager=args.enforce_eager)
    return describe_tags(tags, args.out, describer, settings, args.output)


def run_import_released(args: argparse.Namespace) -> dict:
    from tagalign.tags.released import import_released

    return import_released(args.object_list, args.url_index, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    _add_parse_args(commands.add_parser("parse", help="tag captions (one shard)"))
    _add_merge_args(commands.add_parser("merge", help="vocabulary + labels from all parsed shards"), True)
    _add_embed_args(commands.add_parser("embed", help="tag embeddings through a CLIP text tower"), True)
    describe = commands.add_parser("describe", help="LLM descriptions of every tag (RAM++), resumable")
    describe.add_argument("out", help="folder: reads vocab.csv (unless --tags), writes tag_descriptions.json")
    describe.add_argument("--tags", help="describe these tags instead (one per line, e.g. a benchmark's taglist)")
    describe.add_argument("--output", help="description file (default OUT/tag_descriptions.json)")
    describe.add_argument("--samples", type=int, default=10, help="answers per tag and prompt (RAM++: 10)")
    describe.add_argument("--temperature", type=float, default=0.99, help="sampling temperature (RAM++: 0.99)")
    describe.add_argument("--seed", type=int, default=0)
    describe.add_argument("--chunk-size", type=int, default=100, help="tags per part file (resume unit)")
    _add_llm_args(describe, 77)  # RAM++: at most 77 tokens, the CLIP text length
    everything = commands.add_parser("all", help="parse + merge (+ embed with --clip) in one process")
    _add_parse_args(everything)
    _add_merge_args(everything, False)
    _add_embed_args(everything, False)
    released = commands.add_parser("import-released", help="the authors' object_list.csv + URL index JSON")
    released.add_argument("object_list", help="object_list.csv (one tag per row, or index,tag; header optional)")
    released.add_argument("url_index", help="CC12M_url_object_index.json ({image URL: [tag indices]})")
    released.add_argument("--out", required=True, help="folder for vocab.csv, labels.sqlite, ... (then run embed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("tagalign").setLevel(logging.INFO)
    if args.command == "describe":
        print(json.dumps(run_describe(args), indent=2))
        return
    if args.command == "import-released":
        print(json.dumps(run_import_released(args), indent=2))
        return
    if args.command in ("parse", "all"):
        print(json.dumps(run_parse(args), indent=2))
    if args.command in ("merge", "all"):
        print(json.dumps(run_merge(args), indent=2))
    if args.command == "embed" or (args.command == "all" and args.clip):
        run_embed(args)


if __name__ == "__main__":
    main()
