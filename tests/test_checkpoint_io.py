"""mmengine checkpoints are written atomically: an interrupted save leaves the previous file intact."""

from __future__ import annotations

import os

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.runner.checkpoint import save_checkpoint

from tagalign.training import checkpoint_io


def test_local_paths_use_the_atomic_backend(tmp_path):
    assert isinstance(get_file_backend(str(tmp_path / "iter_5.pth")), checkpoint_io.AtomicLocalBackend)


def test_save_round_trip_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "iter_5.pth"
    save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "meta": {"iter": 5}}, str(target))
    loaded = checkpoint_io.load_local_training_checkpoint(str(target))
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0)) and loaded["meta"]["iter"] == 5
    assert sorted(p.name for p in target.parent.iterdir()) == ["iter_5.pth"]


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "iter_5.pth"
    save_checkpoint({"meta": {"iter": 5}, "w": torch.zeros(3)}, str(target))
    before = target.read_bytes()

    def killed(*_args):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(checkpoint_io.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"meta": {"iter": 10}, "w": torch.ones(1000)}, str(target))
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["iter_5.pth"]  # the partial temporary file is removed too


def test_latest_checkpoint_trusts_a_valid_pointer_and_survives_a_broken_one(tmp_path):
    for n in (5, 10, 100):
        save_checkpoint({"meta": {"iter": n}}, str(tmp_path / f"iter_{n}.pth"))
    (tmp_path / "iter_notes.pth").write_text("not an iteration checkpoint")
    pointer = tmp_path / "last_checkpoint"

    assert checkpoint_io.latest_checkpoint(tmp_path)[0] == str(tmp_path / "iter_100.pth")  # no pointer
    pointer.write_text(str(tmp_path / "iter_10.pth"))
    assert checkpoint_io.latest_checkpoint(tmp_path)[0] == str(tmp_path / "iter_10.pth")  # the pointer wins
    pointer.write_text("")  # killed while mmengine rewrote it
    path, reason = checkpoint_io.latest_checkpoint(tmp_path)
    assert path == str(tmp_path / "iter_100.pth") and "empty" in reason
    pointer.write_text(str(tmp_path / "iter_200.pth"))
    path, reason = checkpoint_io.latest_checkpoint(tmp_path)
    assert path == str(tmp_path / "iter_100.pth") and "missing file" in reason
    empty = tmp_path / "empty_dir"
    assert checkpoint_io.latest_checkpoint(empty) == (None, f"no checkpoint in {empty}")
