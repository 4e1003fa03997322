"""tools/train.py end to end on the tiny CLIP: SIGKILL + --resume equals an uninterrupted run; bad shards."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from plumbing_world import build_plumbing_world

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    build_plumbing_world(root, num_train=200)
    return root


def _command(world: Path, work_dir: Path, iters: int, interval: int, shards: Path | None = None) -> list[str]:
    options = {
        "model.pretrained": world / "tiny_clip",
        "model.tag_embeddings": world / "tags/tag_embeddings.pt",
        "model.tag_frequency": world / "tags/tag_frequency.npy",
        "train_dataloader.dataset.shards": shards or world / "shards",
        "train_dataloader.dataset.labels": world / "tags/labels.sqlite",
        "train_dataloader.batch_size": 8,
        "train_cfg.max_iters": iters,
        "default_hooks.checkpoint.interval": interval,
        "default_hooks.logger.interval": 1,
    }
    return [sys.executable, str(ROOT / "tools/train.py"), str(ROOT / "configs/quickstart.py"), "--work-dir",
            str(work_dir), "--cfg-options", *[f"{k}={v}" for k, v in options.items()]]


def _weights(work_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(work_dir / "tagalign_latest.pth", weights_only=False)["state_dict"]


def test_kill_and_resume_equals_uninterrupted(world, tmp_path):
    subprocess.run(_command(world, tmp_path / "straight", 10, 5), check=True, capture_output=True)
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_command(world, interrupted, 10, 5), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    marker = interrupted / "last_checkpoint"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if marker.exists() and "iter_5.pth" in marker.read_text():
            break
        time.sleep(0.05)
    assert process.poll() is None, "training finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "iter_10.pth").exists()
    result = subprocess.run(_command(world, interrupted, 10, 5) + ["--resume"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming the data stream after 5 batches" in result.stdout + result.stderr
    straight, resumed = _weights(tmp_path / "straight"), _weights(interrupted)
    assert set(straight) == set(resumed)
    for name in straight:
        assert torch.allclose(straight[name], resumed[name], atol=1e-6, rtol=0), name
    start = torch.load(interrupted / "tagalign_iter_5.pth", weights_only=False)["state_dict"]
    assert any(not torch.equal(start[k], resumed[k]) for k in start)  # the resumed run did train


def test_corrupt_images_and_unlabelled_samples_are_skipped_counted_and_training_goes_on(world, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    for shard in sorted((world / "shards").glob("*.tar")):
        with tarfile.open(shard) as source, tarfile.open(shards / shard.name, "w") as target:
            for index, member in enumerate(source):
                data = source.extractfile(member).read()
                name = member.name
                if name.endswith(".jpg") and index % 9 == 0:
                    data = data[:200]  # a truncated JPEG
                if index % 21 == 0:
                    name = "x" + name  # a key the labels do not know
                info = tarfile.TarInfo(name)
                info.size = len(data)
                target.addfile(info, io.BytesIO(data))
    result = subprocess.run(_command(world, tmp_path / "work", 6, 6, shards=shards), capture_output=True, text=True,
                            env={**os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    last = [line for line in log.splitlines() if "Iter(train) [6/6]" in line][-1]
    corrupt = int(last.split("skipped_corrupt: ")[1].split()[0])
    unlabelled = int(last.split("skipped_unlabelled: ")[1].split()[0])
    assert corrupt > 0 and unlabelled > 0
    assert (tmp_path / "work/tagalign_latest.pth").exists()
