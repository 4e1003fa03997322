"""SIGKILL the parse stage at random points ten times, resume, and compare with one uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.nltk  # NLTK's tagger and WordNet (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["red", "green", "small", "wooden", "cat", "dog", "sofa", "car", "tree", "table", "striped", "shirt", "bird"]


def _command(src: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "tools/parse_tags.py"), "parse", str(src), "--out", str(out),
            "--backend", "nltk", "--chunk-size", "250"]


def _outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "parsed").iterdir())}


def test_ten_kills_then_resume_equals_uninterrupted(tmp_path):
    rng = random.Random(0)
    src = tmp_path / "captions.jsonl"
    with open(src, "w") as handle:
        for i in range(20_000):
            caption = "a " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
            handle.write(json.dumps({"key": f"sample{i:06d}", "caption": caption}) + "\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(_command(src, tmp_path / "reference"), check=True, capture_output=True, env=env)
    reference = _outputs(tmp_path / "reference")

    out = tmp_path / "interrupted"
    kills = 0
    for _ in range(10):
        before = len(list((out / "parsed").glob("part-*.jsonl"))) if out.exists() else 0
        process = subprocess.Popen(_command(src, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:  # wait until tagging is under way ...
            if len(list((out / "parsed").glob("part-*.jsonl"))) > before:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # ... then kill at a random point (mid-chunk, mid-write, between)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills == 10, "the run finished too fast to be interrupted ten times; make the corpus larger"
    subprocess.run(_command(src, out), check=True, capture_output=True, env=env)
    resumed = _outputs(out)
    assert resumed == reference  # same part files, byte for byte: nothing lost, nothing duplicated
    keys = [json.loads(line)["key"] for name, data in resumed.items() if name.endswith(".jsonl")
            for line in data.decode().splitlines()]
    assert len(keys) == len(set(keys)) == 20_000
    stats = json.loads((out / "stats/shard-00000.json").read_text())
    assert stats["captions"] == 20_000 and stats["chunks_resumed"] > 0
