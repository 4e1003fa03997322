"""Training model pieces: reference parameter groups, trainable-only state dict, 2-process DDP == global batch."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from tagalign.models import TagAlign, get_tokenizer, load_clip
from tagalign.training.optim import TagAlignOptimWrapperConstructor


def _groups(model, decay_scalars=True):
    constructor = TagAlignOptimWrapperConstructor(
        dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05)),
        dict(decay_scalars=decay_scalars))
    wrapper = constructor(model)
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["weight_decay"]) for g in wrapper.optimizer.param_groups]


def test_reference_weight_decay_groups(tiny_clip):
    model = TagAlign(tiny_clip)
    (decay, wd), (no_decay, wd0) = _groups(model)
    assert wd == 0.05 and wd0 == 0.0
    assert "projector.units.0.gate" in decay and "itc_loss.temperature.logit_scale" in decay  # 0-dim: decayed
    assert "projector.units.0.conv.weight" in decay and "projector.head.proj" in decay
    assert {"projector.units.0.conv.bias", "projector.units.0.norm.weight", "projector.head.ln_post.bias"} <= no_decay
    assert not any(n.startswith("clip.") for n in decay | no_decay)  # frozen CLIP left out
    (decay, _), (no_decay, _) = _groups(model, decay_scalars=False)
    assert "projector.units.0.gate" in no_decay and "tag_loss.temperature.logit_scale" in no_decay


GLOBAL = 8


def _setup():
    torch.manual_seed(0)
    model = TagAlign(load_clip("tagalign-tiny"), tag_embeddings=torch.randn(10, 64))
    with torch.no_grad():  # open the gates so every projector weight gets a gradient
        for unit in model.projector.units:
            unit.gate.fill_(0.3)
    images = torch.randn(GLOBAL, 3, 64, 64)
    tokens = get_tokenizer(model.clip)([f"caption number {i}" for i in range(GLOBAL)])
    tags = [[i % 10, (3 * i + 1) % 10] for i in range(GLOBAL)]
    return model, images, tokens, tags


class _LossModule(torch.nn.Module):
    """DDP needs forward(): this one returns the summed TagAlign loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, tokens, tags):
        losses = self.model.loss(images, tokens, tags)
        return losses["loss_itc"] + losses["loss_tag"], losses


def _worker(rank, world, init_file, out_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model, images, tokens, tags = _setup()
    ddp = DistributedDataParallel(_LossModule(model))
    part = slice(rank * GLOBAL // world, (rank + 1) * GLOBAL // world)
    total, losses = ddp(images[part], tokens[part], tags[part])
    total.backward()  # DDP averages the gradients over ranks
    values = torch.stack([losses["loss_itc"].detach(), losses["loss_tag"].detach()])
    dist.all_reduce(values)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if rank == 0:
        torch.save({"losses": values / world, "grads": grads}, out_file)
    dist.destroy_process_group()


def test_two_process_ddp_equals_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out.pt")), nprocs=2, join=True)
    result = torch.load(tmp_path / "out.pt")
    model, images, tokens, tags = _setup()
    losses = model.loss(images, tokens, tags)
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    expected = torch.stack([losses["loss_itc"].detach(), losses["loss_tag"].detach()])
    assert torch.allclose(result["losses"], expected, atol=1e-5), (result["losses"], expected)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == set(result["grads"]) and len(grads) > 10
    for name, grad in grads.items():
        assert torch.allclose(result["grads"][name], grad, atol=1e-5, rtol=1e-4), name
