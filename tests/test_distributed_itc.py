"""InfoNCE with gather-with-gradient: 2 gloo processes (DDP-style averaging) == 1 process on the global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tagalign.models.losses import ImageTextContrastiveLoss

GLOBAL_BATCH, DIM = 8, 6


def _problem():
    torch.manual_seed(0)
    encoder = torch.nn.Linear(DIM, DIM).double()
    loss = ImageTextContrastiveLoss().double()
    images = torch.randn(GLOBAL_BATCH, DIM, dtype=torch.float64)
    texts = torch.randn(GLOBAL_BATCH, DIM, dtype=torch.float64)
    return encoder, loss, images, texts


def _grads(encoder, loss):
    return [encoder.weight.grad, encoder.bias.grad, loss.temperature.logit_scale.grad.reshape(1)]


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    encoder, loss, images, texts = _problem()
    local = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    value = loss(encoder(images[local]), texts[local])
    value.backward()
    grads = _grads(encoder, loss)
    for grad in grads:  # what DDP does: average gradients over ranks
        dist.all_reduce(grad)
        grad /= world
    mean_loss = value.detach().clone()
    dist.all_reduce(mean_loss)
    if rank == 0:
        torch.save({"grads": grads, "loss": mean_loss / world}, out_file)
    dist.destroy_process_group()


def test_two_process_gradients_equal_global_batch(tmp_path):
    out = tmp_path / "dist.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    result = torch.load(out)

    encoder, loss, images, texts = _problem()
    value = loss(encoder(images), texts)
    value.backward()
    for distributed, single in zip(result["grads"], _grads(encoder, loss)):
        assert torch.allclose(distributed, single, atol=1e-12, rtol=1e-9), (distributed, single)


def test_plain_gather_would_be_wrong(tmp_path):
    """Guard on the test itself: without the gathered negatives, the gradients differ from the global batch."""
    encoder, loss, images, texts = _problem()
    halves = [loss(encoder(images[i * 4 : (i + 1) * 4]), texts[i * 4 : (i + 1) * 4]) for i in range(2)]
    (0.5 * (halves[0] + halves[1])).backward()
    local_grads = [g.clone() for g in _grads(encoder, loss)]
    encoder, loss, images, texts = _problem()
    loss(encoder(images), texts).backward()
    assert not torch.allclose(local_grads[0], _grads(encoder, loss)[0], atol=1e-6)
