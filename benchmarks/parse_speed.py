"""Tag parsing throughput and vocabulary-build memory.

    python benchmarks/parse_speed.py [--captions 20000] [--corpus 1000000]

1. NLTK backend captions/s through the parse stage (chunked, atomic part files) vs the bare NLTK loop
   (tokenise + POS-tag + lemmatise, nothing written) on the same captions.
2. Merge stage (vocabulary + labels + prior) on a generated parsed corpus of --corpus captions with a Zipf tag
   distribution: wall time and peak RSS, vs a naive merge that loads every record into memory first.
Each measurement runs in a fresh child process so peak RSS is its own. Needs NLTK data (see README).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from _machine import cpu_name

WORDS = ["red", "green", "small", "wooden", "cat", "dog", "sofa", "car", "tree", "table", "striped", "shirt", "bird",
         "sitting", "on", "a", "the", "with", "blue", "old", "house", "street", "man", "woman", "beach", "sky"]


def _child(code: str, *args: str) -> dict:
    """Run ``code`` in a new interpreter; it prints a JSON dict; add the child's peak RSS (MB)."""
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["children_peak_rss_mb"] = usage.ru_maxrss / 1024
    return out


PARSE_STAGE = """
import json, sys, time
from tagalign.tags.parse import parse_captions
from tagalign.tags.parsers import NLTKParser
parser = NLTKParser()
start = time.perf_counter()
stats = parse_captions([sys.argv[1]], sys.argv[2], parser, chunk_size=5000, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "captions": stats["captions"]}))
"""

BARE_NLTK = """
import json, sys, time
from nltk.tokenize import TreebankWordTokenizer
from tagalign.tags.nltk_data import lemmatizer, pos_tagger
tok, tagger, lemma = TreebankWordTokenizer(), pos_tagger(), lemmatizer()
captions = [json.loads(line)["caption"] for line in open(sys.argv[1])]
start = time.perf_counter()
for caption in captions:
    for word, pos in tagger.tag(tok.tokenize(caption)):
        if pos in ("NN", "NNS"):
            lemma.lemmatize(word.lower(), "n")
print(json.dumps({"seconds": time.perf_counter() - start, "captions": len(captions)}))
"""

MERGE_STAGE = """
import json, resource, sys, time
from tagalign.tags.merge import merge_parsed
start = time.perf_counter()
stats = merge_parsed(sys.argv[1], top_k_objects=10000, top_k_attributes=1000)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": rss, "samples": stats["labelled_samples"]}))
"""

NAIVE_MERGE = """
import json, resource, sys, time
from collections import Counter
from pathlib import Path
start = time.perf_counter()
records = [json.loads(l) for p in sorted(Path(sys.argv[1], "parsed").glob("part-*.jsonl")) for l in open(p)]
counts = Counter(t for r in records for t in r["objects"])
vocab = {t: i for i, (t, _) in enumerate(counts.most_common(10000))}
labels = {r["key"]: [vocab[t] for t in r["objects"] if t in vocab] for r in records}
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": rss, "samples": len(labels)}))
"""


def write_captions(path: Path, count: int) -> None:
    rng = random.Random(0)
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"key": f"s{i:08d}", "caption": " ".join(rng.choices(WORDS, k=rng.randint(5, 14)))})
                         + "\n")


def write_parsed_corpus(out: Path, count: int, chunk: int = 100_000) -> None:
    """A parsed corpus as the parse stage writes it: Zipf-distributed object/attribute tags."""
    rng = random.Random(1)
    objects = [f"object{i}" for i in range(60_000)]
    attributes = [f"attribute{i}" for i in range(6_000)]
    cum_o = list(itertools.accumulate(1 / (i + 1) for i in range(len(objects))))
    cum_a = list(itertools.accumulate(1 / (i + 1) for i in range(len(attributes))))
    (out / "parsed").mkdir(parents=True)
    for part, start in enumerate(range(0, count, chunk)):
        with open(out / "parsed" / f"part-00000-{part:06d}.jsonl", "w") as handle:
            for i in range(start, min(start + chunk, count)):
                row = {"key": f"http://img.example/{i:09d}.jpg", "caption": "-",
                       "objects": sorted(set(rng.choices(objects, cum_weights=cum_o, k=rng.randint(1, 6)))),
                       "attributes": sorted(set(rng.choices(attributes, cum_weights=cum_a, k=rng.randint(0, 3)))),
                       "status": "ok"}
                handle.write(json.dumps(row) + "\n")



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=20_000)
    parser.add_argument("--corpus", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores | python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_captions(tmp / "captions.jsonl", args.captions)
        bare = _child(BARE_NLTK, str(tmp / "captions.jsonl"))
        stage = _child(PARSE_STAGE, str(tmp / "captions.jsonl"), str(tmp / "parse_out"))
        print(f"NLTK parse stage : {stage['captions'] / stage['seconds']:.0f} captions/s "
              f"({stage['captions']} captions, {stage['seconds']:.1f} s)")
        print(f"bare NLTK loop   : {bare['captions'] / bare['seconds']:.0f} captions/s (no normalisation, no output)")
        print(f"ratio stage/bare : {bare['seconds'] / stage['seconds']:.2f} (1.0 = no pipeline overhead)")

        write_parsed_corpus(tmp / "corpus", args.corpus)
        merge = _child(MERGE_STAGE, str(tmp / "corpus"))
        naive = _child(NAIVE_MERGE, str(tmp / "corpus"))
        print(f"merge ({args.corpus:,} captions): {merge['seconds']:.1f} s, peak RSS {merge['peak_rss_mb']:.0f} MB "
              f"({merge['samples']:,} labelled)")
        print(f"naive in-memory merge         : {naive['seconds']:.1f} s, peak RSS {naive['peak_rss_mb']:.0f} MB")
        print(f"peak RSS ratio ours/naive     : {merge['peak_rss_mb'] / naive['peak_rss_mb']:.2f}")
    print("vLLM captions/s: needs a GPU (not measured here)")


if __name__ == "__main__":
    main()
