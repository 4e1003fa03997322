"""The describe stage: LLM descriptions of every tag, RAM++ style, resumable in chunks of tags.

For each tag and each of RAM++'s five prompts the model samples ``samples`` answers (RAM++: 10 at temperature 0.99,
at most 77 tokens). Every answer is recorded in ``OUT/descriptions/part-CCCCCC.jsonl`` with its status (see
:func:`~tagalign.tagging.descriptions.classify_description`); a (tag, prompt) whose answers are all filtered is
asked once more with another seed, and that attempt is recorded too. A part file is renamed into place only when
its chunk is complete, so a killed run resumes by skipping finished chunks. Each request has its own seed, derived
from (seed, tag, prompt, attempt), so a resumed run samples what an uninterrupted one would. When every chunk is
done, ``tag_descriptions.json`` is written in RAM++'s layout: "a photo of a {tag}." then the kept answers in
prompt order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from ..atomic import atomic_write_text, remove_leftover_temporaries
from ..models.description_file import photo_prompt, write_descriptions
from .descriptions import DESCRIPTION_PROMPTS, classify_description

logger = logging.getLogger(__name__)

__all__ = ["DescribeSettings", "Describer", "VLLMDescriber", "describe_tags"]

KEPT = ("kept", "trimmed")


@dataclass(frozen=True)
class DescribeSettings:
    """RAM++'s defaults (tagging spec §1.1)."""

    prompts: tuple[str, ...] = DESCRIPTION_PROMPTS
    samples: int = 10
    temperature: float = 0.99
    max_tokens: int = 77
    seed: int = 0
    chunk_size: int = 100  # tags per part file

    def __post_init__(self) -> None:
        for name in ("samples", "max_tokens", "chunk_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"describe: {name} must be a whole number >= 1, got {getattr(self, name)!r}")
        if not self.temperature >= 0:
            raise ValueError(f"describe: temperature must be >= 0, got {self.temperature!r}")
        if not self.prompts:
            raise ValueError("describe: at least one prompt is needed")


def read_tag_file(path: str | os.PathLike) -> list[str]:
    """The tags of a taglist file, one per line (blank lines skipped); errors name the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason}); expected one tag per "
                         f"line in UTF-8") from None
    except OSError as err:
        raise ValueError(f"cannot read the tag file {path}: {err}") from None
    tags = [line.strip() for line in text.splitlines() if line.strip()]
    if not tags:
        raise ValueError(f"{path}: no tag in the file (empty or blank); expected one tag per line")
    return tags


class Describer(Protocol):
    def describe(self, requests: Sequence[str], seeds: Sequence[int],
                 settings: DescribeSettings) -> list[list[tuple[str, str | None]] | None]:
        """Per request, ``settings.samples`` ``(text, finish_reason)`` pairs; None if the request cannot run."""
        ...


class VLLMDescriber:
    """Free-text sampling on vLLM's offline engine (the same engine code as tag parsing)."""

    def __init__(self, model: str, tensor_parallel_size: int = 1, max_model_len: int = 2048,
                 gpu_memory_utilization: float = 0.9, dtype: str = "auto", **engine_kwargs):
        from ..tags.parsers import make_llm

        self.llm = make_llm(model, tensor_parallel_size, max_model_len, gpu_memory_utilization, dtype,
                            **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = max_model_len

    def describe(self, requests, seeds, settings):
        from vllm import SamplingParams

        from ..tags.prompts import chat_prompt

        prompts = [chat_prompt(request, self.tokenizer) for request in requests]
        fits = [len(self.tokenizer.encode(p)) + settings.max_tokens <= self.max_model_len for p in prompts]
        params = [SamplingParams(n=settings.samples, temperature=settings.temperature, max_tokens=settings.max_tokens,
                                 seed=seed) for seed, ok in zip(seeds, fits) if ok]
        runnable = [p for p, ok in zip(prompts, fits) if ok]
        outputs = iter(self.llm.generate(runnable, params, use_tqdm=False) if runnable else [])
        return [[(o.text, o.finish_reason) for o in next(outputs).outputs] if ok else None for ok in fits]


def _seed(base: int, tag: str, prompt: int, attempt: int) -> int:
    digest = hashlib.sha256(f"{base}|{tag}|{prompt}|{attempt}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31 - 1)


def _describe_chunk(tags: Sequence[str], describer: Describer, settings: DescribeSettings) -> list[dict]:
    """Every answer for these tags: ``{"tag", "prompt", "attempt", "sample", "status", "text"}``."""
    rows: list[dict] = []
    pending = [(tag, p) for tag in tags for p in range(len(settings.prompts))]
    for attempt in (0, 1):
        requests = [settings.prompts[p].format(tag=tag) for tag, p in pending]
        seeds = [_seed(settings.seed, tag, p, attempt) for tag, p in pending]
        answers = describer.describe(requests, seeds, settings) if pending else []
        retry = []
        for (tag, p), samples in zip(pending, answers):
            if samples is None:
                rows.append({"tag": tag, "prompt": p, "attempt": attempt, "sample": 0, "status": "too_long",
                             "text": ""})
                continue
            kept = 0
            for index, (raw, finish) in enumerate(samples):
                status, text = classify_description(raw, tag, finish)
                kept += status in KEPT
                rows.append({"tag": tag, "prompt": p, "attempt": attempt, "sample": index, "status": status,
                             "text": text if status in KEPT else raw})
            if not kept:
                retry.append((tag, p))
        pending = retry
    order = {tag: i for i, tag in enumerate(tags)}
    rows.sort(key=lambda r: (order[r["tag"]], r["prompt"], r["attempt"], r["sample"]))
    return rows


def _check_settings(folder: Path, settings: DescribeSettings, tags: Sequence[str]) -> None:
    saved_file = folder / "settings.json"
    current = {**asdict(settings), "prompts": list(settings.prompts),
               "tags_sha256": hashlib.sha256("\n".join(tags).encode()).hexdigest(), "tags": len(tags)}
    if saved_file.exists():
        saved = json.loads(saved_file.read_text())
        changed = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in current.items() if saved.get(k) != v]
        if changed:
            raise RuntimeError(f"{folder} holds descriptions made with other settings or tags ({'; '.join(changed)}). "
                               f"Resuming would mix them: rerun with the earlier settings or use a new output folder.")
    else:
        atomic_write_text(saved_file, json.dumps(current, indent=2))


def describe_tags(tags: Sequence[str], out_dir: str | os.PathLike, describer: Describer,
                  settings: DescribeSettings = DescribeSettings(), output: str | os.PathLike | None = None) -> dict:
    """Describe every tag (resuming finished chunks); write the description file and return the statistics."""
    tags = list(dict.fromkeys(tags))
    out_dir = Path(out_dir)
    folder = out_dir / "descriptions"
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftover_temporaries(folder)  # left by a killed run
    _check_settings(folder, settings, tags)
    chunks = [tags[i : i + settings.chunk_size] for i in range(0, len(tags), settings.chunk_size)]
    start, resumed, fresh = time.monotonic(), 0, 0
    kept: dict[str, list[str]] = {tag: [photo_prompt(tag)] for tag in tags}
    statuses: Counter = Counter()
    retried: set[tuple[str, int]] = set()
    for index, chunk in enumerate(chunks):
        part = folder / f"part-{index:06d}.jsonl"
        if part.exists():
            resumed += 1
        else:
            atomic_write_text(part, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                        for r in _describe_chunk(chunk, describer, settings)))
            fresh += len(chunk)
            logger.info("described %d/%d tags (%d in this run, %.2f tags/s)", sum(map(len, chunks[: index + 1])),
                        len(tags), fresh, fresh / max(time.monotonic() - start, 1e-9))
        with open(part, encoding="utf-8") as handle:  # streamed: a large vocabulary's answers never sit in memory
            for line in handle:
                row = json.loads(line)
                statuses[row["status"]] += 1
                if row["attempt"]:
                    retried.add((row["tag"], row["prompt"]))
                if row["status"] in KEPT:
                    kept[row["tag"]].append(row["text"])
    path = write_descriptions(output or out_dir / "tag_descriptions.json", kept)
    stats = {"tags": len(tags), "answers": sum(statuses.values()),
             **{s: statuses.get(s, 0) for s in ("kept", "trimmed", "off_topic", "cut", "empty", "too_long")},
             "retried_requests": len(retried),
             "tags_without_descriptions": [t for t, texts in kept.items() if len(texts) == 1],
             "chunks_resumed": resumed, "output": str(path)}
    stats_dir = out_dir / "stats"
    stats_dir.mkdir(exist_ok=True)
    atomic_write_text(stats_dir / "describe.json", json.dumps(stats, indent=2))
    logger.info("descriptions of %d tags in %s: %d answers kept (%d trimmed to a full sentence), %d off-topic, %d cut "
                "off, %d empty; %d tags have no description", len(tags), path, stats["kept"] + stats["trimmed"],
                stats["trimmed"], stats["off_topic"], stats["cut"], stats["empty"],
                len(stats["tags_without_descriptions"]))
    return stats
