"""Second vision models (tagalign.models.vfm) and ProxyCLIP against the formulas written here (spec-2 §3).

Tiny random VFMs of each architecture (non-zero biases and norms) and the tiny CLIP (random biases and LayerNorms).
Windows are non-square and the two patch grids differ: CLIP 16 vs DINO 8, DINOv2 14 (which drops the partial patch),
SAM's squashed input. The VFM's feature readout is checked against timm's own intermediate-layer API, ProxyCLIP's
last block against the open_clip block written out in tests/test_encoders.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_dense import _layer_norm
from test_encoders import _before_last, _merge, _out_proj, _qkv

from tagalign.models import TagAlign, dense_features
from tagalign.models.vfm import VFM_CATALOG, load_vfm

CLIP_STATS = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _normalise(pixels, stats):
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in stats)
    return (pixels - mean) / std


def _timm_features(vfm, pixels):
    """The feature each method reads, through timm's own API on ImageNet-normalised pixels: DINO-style
    ``get_intermediate_layers(last, norm=True)`` on whole patches; SAM's neck on the 1024 (here tiny) squash."""
    x = _normalise(pixels, IMAGENET)
    model = vfm.model
    if vfm.spec.readout == "neck":
        size = vfm.input_size
        return model.forward_features(F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False))
    p = model.patch_embed.patch_size
    x = x[..., : x.shape[-2] // p[0] * p[0], : x.shape[-1] // p[1] * p[1]]
    if hasattr(model, "get_intermediate_layers"):
        return model.get_intermediate_layers(x, n=1, reshape=True, norm=True)[0]
    return model.forward_intermediates(x, indices=1, norm=True, intermediates_only=True)[0]


@pytest.mark.parametrize("name", list(VFM_CATALOG))
def test_vfm_features_are_the_methods_readout_after_renormalising(name):
    """Pixels normalised for CLIP (the pipeline's statistics) are un-normalised and re-normalised with the VFM's;
    the feature is timm's last-layer output after the final norm without prefix tokens (DINO), or SAM's neck."""
    vfm = load_vfm(name, tiny=True)
    assert any(p.abs().sum() > 0 for n, p in vfm.model.named_parameters() if n.endswith("bias"))
    pixels = torch.rand(2, 3, 60, 100)
    vfm.input_statistics = CLIP_STATS
    with torch.no_grad():
        ours = vfm.features(_normalise(pixels, CLIP_STATS))
        expected = _timm_features(vfm, pixels)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() < 1e-4
    if vfm.spec.readout == "tokens":
        p = vfm.patch_size[0]
        assert ours.shape[-2:] == (60 // p, 100 // p)
    assert torch.equal(load_vfm(name, tiny=True).model.state_dict()[next(iter(vfm.model.state_dict()))],
                       vfm.model.state_dict()[next(iter(vfm.model.state_dict()))])  # the tiny model is seeded


def _proxy_statement(clip, vfm, images, beta=1.2, gamma=3.0):
    """Spec-2 §3 written out: S = ÊᵀÊ; M = γ(S − β·mean S), negatives −∞; A = softmax_row(M) for every head;
    V = the last block's patch values, bilinearly resized to the VFM grid; out_proj(A·V); ln_post·proj."""
    visual = clip.visual
    x, block, grid = _before_last(visual, images)
    _, _, v = _qkv(block, x)
    v = v[:, :, 1:]  # patch rows
    features = vfm.features(images)
    h2, w2 = features.shape[-2:]
    b, heads, _, d = v.shape
    v = F.interpolate(v.reshape(b * heads, *grid, d).permute(0, 3, 1, 2), size=(h2, w2), mode="bilinear",
                      align_corners=False).permute(0, 2, 3, 1).reshape(b, heads, h2 * w2, d)
    out = []
    for i in range(b):  # one window at a time, as the authors' slide loop runs
        e = features[i].flatten(1)
        e = e / e.norm(dim=0, keepdim=True)
        s = e.t() @ e
        m = gamma * (s - beta * s.mean())
        m[m < 0] = -math.inf
        out.append(torch.softmax(m, dim=-1))
    attention = torch.stack(out)[:, None]
    tokens = _out_proj(block, _merge(attention @ v))
    head = _layer_norm(tokens, visual.ln_post) @ visual.proj
    return head.transpose(1, 2).reshape(b, -1, h2, w2)


@pytest.mark.parametrize("name,size", [("dino_vitb8", (64, 96)), ("dinov2_vitb14_reg", (84, 112)),
                                       ("sam_vitb", (48, 80)), ("dino_vitb16", (80, 48))])
def test_proxyclip_equals_its_formula_on_the_vfm_grid(tiny_clip, name, size):
    vfm = load_vfm(name, tiny=True)
    torch.manual_seed(7)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = dense_features(tiny_clip, images, "proxyclip", vfm=vfm)
        expected = _proxy_statement(tiny_clip, vfm, images)
        grid = vfm.grid(images)
    assert ours.shape == (2, 64, *grid)
    assert grid != (size[0] // 16, size[1] // 16) or name == "dino_vitb16"
    assert torch.isfinite(expected).all(), "a degenerate row: pick other inputs"
    assert (ours - expected).abs().max() < 1e-4
    other = dense_features(tiny_clip, images, "proxyclip", vfm=vfm, beta=0.5, gamma=6.0)
    assert (other - _proxy_statement(tiny_clip, vfm, images, 0.5, 6.0)).abs().max() < 1e-4
    assert not torch.allclose(other, ours, atol=1e-3)


def test_proxyclip_batch_mean_option_and_degenerate_rows(tiny_clip):
    """batch_mean takes mean(S) over all windows of the batch (the authors' code as written): a window's output then
    depends on the others. A row with no non-negative logit keeps its diagonal instead of becoming NaN."""
    from tagalign.models.encoders import proxy_attention

    vfm = load_vfm("dino_vitb8", tiny=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        alone = dense_features(tiny_clip, images[:1], "proxyclip", vfm=vfm, batch_mean=True)
        together = dense_features(tiny_clip, images, "proxyclip", vfm=vfm, batch_mean=True)[:1]
        per_window = dense_features(tiny_clip, images, "proxyclip", vfm=vfm)[:1]
    assert not torch.allclose(alone, together, atol=1e-4) and torch.allclose(alone, per_window, atol=1e-5)
    features = torch.ones(1, 4, 2, 2)  # identical tokens: S = 1, M = γ(1 − β) < 0 everywhere
    attention = proxy_attention(features)
    assert torch.equal(attention[0], torch.eye(4))


def test_tagalign_on_proxyclip_reads_the_vfm_grid_and_needs_its_vfm(tiny_clip):
    vfm = load_vfm("dino_vitb8", tiny=True)
    with pytest.raises(ValueError, match="reads a second vision model.*dino_vitb8"):
        TagAlign(tiny_clip, tag_embeddings=torch.randn(3, 64), encoder="proxyclip")
    with pytest.raises(ValueError, match="reads no second vision model"):
        TagAlign(tiny_clip, tag_embeddings=torch.randn(3, 64), encoder="sclip", vfm=vfm)
    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(3, 64), encoder="proxyclip", vfm=vfm)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = dense_features(tiny_clip, images, "proxyclip", vfm=vfm)
        assert expected.shape[-2:] == (8, 12)
        assert (model.dense_features(images) - expected).abs().max() < 1e-5  # gates start at 0
        assert (model.clip_dense_features(images) - expected).abs().max() < 1e-5
    assert model.config["vfm"] == {"name": "dino_vitb8", "timm_name": "vit_base_patch8_224.dino",
                                   "source": "tiny random", "weights_hash": vfm.weights_hash}
    assert not any(key.startswith("vfm.") for key in model.trainable_state_dict())


def test_checkpoints_record_the_vfm_and_reload_it(tiny_clip, clip_file, tmp_path):
    """A projector trained on proxyclip: the checkpoint names its VFM (name, weights hash, source); tagalign.load
    rebuilds the same tiny VFM from that record, and refuses another VFM."""
    from tagalign import load
    from tagalign.models import CheckpointMismatchError, get_tokenizer
    from tagalign.models.checkpoint import read_checkpoint, save_checkpoint

    vfm = load_vfm("dino_vitb8", tiny=True)
    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(3, 64), encoder="proxyclip", vfm=vfm)
    images = torch.randn(2, 3, 64, 64)
    losses = model.loss(images, get_tokenizer(tiny_clip)(["a red square", "a dog"]), [[0], [1, 2]])
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    assert all(p.grad is None for p in vfm.parameters())
    with torch.no_grad():
        model.projector.units[0].gate.add_(0.5)  # a trained state to carry
    path = tmp_path / "proxy.pth"
    save_checkpoint(model, path)
    assert read_checkpoint(path)["config"]["vfm"]["weights_hash"] == vfm.weights_hash
    reloaded = load(str(path), clip="tagalign-tiny", pretrained=clip_file)
    assert reloaded.encoder == "proxyclip" and reloaded.vfm.weights_hash == vfm.weights_hash
    with torch.no_grad():
        assert torch.allclose(reloaded.dense_features(images), model.dense_features(images), atol=1e-5)
    with pytest.raises(CheckpointMismatchError, match="second model 'dino_vitb8'.*'dinov2_vitb14_reg'"):
        load(str(path), clip="tagalign-tiny", pretrained=clip_file, vfm="dinov2_vitb14_reg", vfm_weights="tiny")


def test_vfm_weights_from_a_file_and_clear_errors(tmp_path):
    """A local weights file of the right architecture loads bit for bit; a missing file, a file of another model
    and an unknown name are refused with the file and the expectation named."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("vit_base_patch16_224.dino", pretrained=False, num_classes=0, dynamic_img_size=True)
    good = tmp_path / "dino.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, good)
    loaded = load_vfm("dino_vitb16", pretrained=str(good))
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in source.state_dict().items())
    assert loaded.identity()["source"] == str(good)
    with pytest.raises(FileNotFoundError, match="missing.safetensors does not exist"):
        load_vfm("dino_vitb16", pretrained=str(tmp_path / "missing.safetensors"))
    # a ViT-B/16 file for the B/8 model: timm would resample its patch embedding without a word
    with pytest.raises(ValueError, match=r"dino.safetensors is not a weights file of timm 'vit_base_patch8_224.dino'"
                                         r": its patch embedding is \[768, 3, 16, 16\]"):
        load_vfm("dino_vitb8", pretrained=str(good))
    other = tmp_path / "other.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(768, 3, 14, 14)}}, other)
    with pytest.raises(ValueError, match="other.pth is not a weights file of timm 'vit_base_patch16_224.dino'"):
        load_vfm("dino_vitb16", pretrained=str(other))
    with pytest.raises(ValueError, match="unknown second model 'dino_vitg'; choose from dino_vitb8"):
        load_vfm("dino_vitg")
