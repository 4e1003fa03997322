"""Tower adapters (issue 26) against timm's own forward and against the dense-readout formulas written here.

Tiny random towers of each family (tagalign/models/tiny_towers.py): non-zero biases and LayerNorms, random CLS token
and MAP latent, RoPE on for PE-Core and EVA02. The statements below use timm's own modules for everything the
encoders do not change (patch embedding, positions, RoPE table, the blocks before the last, MLPs) and write out
what they change: per-head q/k/v, RoPE rotation, attention, the inner norm and projection, the dense heads.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from random_affine import randomize_affine_

from tagalign.models import TagAlign, dense_features, load_clip
from tagalign.models.encoders import UnsupportedTowerError, as_tower

TIMM_FAMILIES = {"siglip": "tagalign-tiny-mapvit", "pe_core": "tagalign-tiny-pe-core", "eva02": "tagalign-tiny-eva02"}


def _tiny(name: str, seed: int, map_readout: str = "value"):
    torch.manual_seed(seed)
    model = load_clip(name, map_readout=map_readout)
    trunk = model.visual.trunk
    with torch.no_grad():
        for tensor in (getattr(trunk, "cls_token", None), getattr(trunk.attn_pool, "latent", None)
                       if getattr(trunk, "attn_pool", None) is not None else None):
            if tensor is not None:
                tensor.copy_(torch.randn_like(tensor))
    return randomize_affine_(model, seed=seed)


@pytest.fixture(scope="module")
def towers():
    return {family: _tiny(name, seed) for seed, (family, name) in enumerate(TIMM_FAMILIES.items(), start=30)}


# ----------------------------------------------------------------------------------------------- statements
def _layer_norm(x, norm):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _timm_before_last(trunk, images, depth=1):
    """timm's own code: patch embedding, positions (+ RoPE table), pre-norm, every block but the last ``depth``."""
    x = trunk.patch_embed(images)
    rope = None
    if type(trunk).__name__ == "Eva":
        x, rope = trunk._pos_embed(x)
    else:
        x = trunk._pos_embed(x)
    x = trunk.norm_pre(x)
    for block in trunk.blocks[:-depth]:
        x = block(x, rope=rope) if rope is not None else block(x)
    return x, rope


def _rotate(t, table):
    """RoPE as the spec states it: ``t·cos + rot(t)·sin``, ``rot([x0, x1, ...]) = [-x1, x0, ...]``."""
    sin, cos = table.chunk(2, dim=-1)
    rotated = torch.stack([-t[..., 1::2], t[..., 0::2]], dim=-1).reshape(t.shape)
    return t * cos + rotated * sin


def _qkv(block, x, rope, prefix):
    attn = block.attn
    y = _layer_norm(x, block.norm1)
    if getattr(attn, "qkv", None) is not None:
        bias = attn.qkv.bias if attn.qkv.bias is not None else torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])
        q, k, v = F.linear(y, attn.qkv.weight, bias).chunk(3, dim=-1)
    else:
        q, k, v = (F.linear(y, p.weight, p.bias) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    b, n, c = q.shape
    q, k, v = (t.reshape(b, n, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))
    if rope is not None:
        q = torch.cat([q[:, :, :prefix], _rotate(q[:, :, prefix:], rope)], dim=2)
        k = torch.cat([k[:, :, :prefix], _rotate(k[:, :, prefix:], rope)], dim=2)
    return q, k, v


def _out(block, mixed):
    """merge heads -> inner norm (EVA02's scale_attn_inner) -> proj -> layer scale (none in these towers)."""
    b, h, n, d = mixed.shape
    merged = mixed.transpose(1, 2).reshape(b, n, h * d)
    if isinstance(block.attn.norm, torch.nn.LayerNorm):
        merged = _layer_norm(merged, block.attn.norm)
    return F.linear(merged, block.attn.proj.weight, block.attn.proj.bias)


def _ffn(block, x):
    return x + block.mlp(_layer_norm(x, block.norm2))


def _softmax(a, b, extra=0.0):
    return torch.softmax(a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1]) + extra, dim=-1)


def _omega(h, w, sigma, prefix):
    omega = torch.zeros(prefix + h * w, prefix + h * w)
    for a in range(h * w):
        for b in range(h * w):
            (i, j), (k, m) = divmod(a, w), divmod(b, w)
            omega[prefix + a, prefix + b] = math.exp(-((i - k) ** 2 + (j - m) ** 2) / (2 * sigma**2))
    return omega


def _head_statement(model, tokens, with_mlp=False):
    """The dense head per token: SigLIP ``W_p(W_v LN(x) + b_v) + b_p``; PE-Core the same then the trunk head;
    EVA02 ``head(LN(x))``; ``with_mlp`` adds the pool's ``z + mlp(LN(z))``."""
    trunk = model.visual.trunk
    x = _layer_norm(tokens, trunk.norm)
    pool = getattr(trunk, "attn_pool", None)
    if pool is not None:
        c = x.shape[-1]
        x = F.linear(F.linear(x, pool.kv.weight[c:], pool.kv.bias[c:]), pool.proj.weight, pool.proj.bias)
        if with_mlp:
            x = x + pool.mlp(_layer_norm(x, pool.norm))
    if isinstance(trunk.head, torch.nn.Linear):
        x = F.linear(x, trunk.head.weight, trunk.head.bias)
    return x


def _statement(model, images, encoder):
    trunk = model.visual.trunk
    prefix = trunk.num_prefix_tokens
    h, w = images.shape[2] // 16, images.shape[3] // 16
    if encoder == "surgery":
        depth = 6
        x, rope = _timm_before_last(trunk, images, depth)
        x_ori = x_new = x
        for block in trunk.blocks[-depth:]:
            _, _, v = _qkv(block, x_ori, rope, prefix)
            x_new = x_new + _out(block, _softmax(v, v) @ v)
            x_ori = block(x_ori, rope=rope) if rope is not None else block(x_ori)
        tokens = x_new
    else:
        x, rope = _timm_before_last(trunk, images)
        block = trunk.blocks[-1]
        q, k, v = _qkv(block, x, rope, prefix)
        if encoder == "vanilla":
            tokens = _ffn(block, x + _out(block, _softmax(q, k) @ v))
        elif encoder == "maskclip":
            tokens = _ffn(block, x + _out(block, v))
        elif encoder == "sclip":
            tokens = _ffn(block, x + _out(block, (_softmax(q, q) + _softmax(k, k)) @ v))
        elif encoder == "clearclip":
            tokens = _out(block, _softmax(q, q) @ v)
        elif encoder == "naclip":
            tokens = _out(block, _softmax(k, k, _omega(h, w, 5.0, prefix)) @ v)
    features = _head_statement(model, tokens[:, prefix:])
    return features.transpose(1, 2).reshape(images.shape[0], -1, h, w)


# ----------------------------------------------------------------------------------------------- tests
def test_each_family_is_read_from_the_towers_structure(towers, tiny_clip):
    assert as_tower(tiny_clip.visual).family == "open_clip_vit"
    assert tiny_clip.tagalign_identity.family == "open_clip_vit"
    for family, model in towers.items():
        tower = as_tower(model.visual)
        assert tower.family == family and model.tagalign_identity.family == family
        assert tower.num_prefix == (0 if family == "siglip" else 1)
        assert (tower.map_readout is None) == (family == "eva02")


@pytest.mark.parametrize("family", sorted(TIMM_FAMILIES))
@pytest.mark.parametrize("size", [(224, 224), (160, 96)])
def test_the_adapters_token_stream_equals_timms_own_forward(towers, family, size):
    """Every token after every block (RoPE, positions, pre-norm, layer scales) as timm computes it, at the native
    grid and at another one (the tiny towers have dynamic_img_size); and the pooled embedding is encode_image's."""
    model = towers[family]
    tower = as_tower(model.visual)
    images = torch.randn(2, 3, *size)
    with torch.no_grad():
        ours = tower.run(tower.embed(images), tower.grid(images))
        theirs = model.visual.trunk.forward_features(images)
        assert (model.visual.trunk.norm(ours) - theirs).abs().max() < 1e-5
        assert (tower.encode(images) - model.encode_image(images)).abs().max() < 1e-5


@pytest.mark.parametrize("family", ["open_clip_vit", "eva02"])
def test_cls_towers_cls_readout_is_encode_image(towers, tiny_clip, family):
    """On towers pooled by their CLS token, the unmodified stream's CLS row through the dense head is exactly the
    tower's image embedding (the identity the dense head must keep)."""
    model = tiny_clip if family == "open_clip_vit" else towers[family]
    tower = as_tower(model.visual)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        stream = tower.run(tower.embed(images), tower.grid(images))
        assert (tower.dense_head()(stream[:, 0]) - model.encode_image(images)).abs().max() < 1e-5


def test_map_head_one_patch_readout_with_mlp_is_the_pooled_embedding():
    """SigLIP-style tower, one 16x16 patch: the pool attends to that one token, so the per-token readout with the
    pool's MLP equals the pooled embedding; without the MLP (the default, TextRegion's) it does not."""
    images = torch.randn(3, 3, 16, 16)
    with_mlp = _tiny("tagalign-tiny-mapvit", 30, map_readout="value_mlp")
    without = _tiny("tagalign-tiny-mapvit", 30)
    with torch.no_grad():
        pooled = with_mlp.encode_image(images)
        assert torch.equal(pooled, without.encode_image(images))
        readout = dense_features(with_mlp, images, "vanilla")[:, :, 0, 0]
        assert (readout - pooled).abs().max() < 1e-5
        assert (dense_features(without, images, "vanilla")[:, :, 0, 0] - pooled).abs().max() > 1e-2


@pytest.mark.parametrize("family", sorted(TIMM_FAMILIES))
@pytest.mark.parametrize("encoder", ["vanilla", "maskclip", "sclip", "clearclip", "naclip", "surgery"])
def test_encoders_on_timm_towers_follow_their_formulas(towers, family, encoder):
    """Non-square input (grid 4x6, not the native 14x14): RoPE tables and positions are rebuilt for it."""
    model = towers[family]
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = dense_features(model, images, encoder)
        expected = _statement(model, images, encoder)
    assert ours.shape == expected.shape
    assert (ours - expected).abs().max() < 1e-4


def test_value_mlp_readout_follows_its_formula():
    model = _tiny("tagalign-tiny-pe-core", 31, map_readout="value_mlp")
    images = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        ours = dense_features(model, images, "vanilla")
        trunk = model.visual.trunk
        stream = trunk.forward_features(images)  # timm's own stream, already through the final norm
        c = stream.shape[-1]
        pool = trunk.attn_pool
        z = F.linear(F.linear(stream[:, 1:], pool.kv.weight[c:], pool.kv.bias[c:]), pool.proj.weight, pool.proj.bias)
        z = z + pool.mlp(_layer_norm(z, pool.norm))
        z = F.linear(z, trunk.head.weight, trunk.head.bias)
    assert (ours.flatten(2).transpose(1, 2) - z).abs().max() < 1e-5


def test_steps_a_family_does_not_define_are_refused_with_the_reason(towers):
    with pytest.raises(UnsupportedTowerError, match="bilinear.*not defined on the siglip tower family"):
        dense_features(towers["siglip"], torch.randn(1, 3, 64, 64), "clip_surgery")
    with pytest.raises(UnsupportedTowerError, match="ResNet"):
        as_tower(torch.nn.Conv2d(3, 8, 3))


@pytest.mark.parametrize("family", sorted(TIMM_FAMILIES))
def test_tagalign_projector_starts_as_the_towers_dense_head(towers, family):
    """The projector's gates start at 0 and its head is a trainable copy of the tower's dense head: at step 0 the
    projected features are the frozen encoder's; the global embedding is the tower's own."""
    model = towers[family]
    tagalign = TagAlign(model, tag_embeddings=torch.randn(5, as_tower(model.visual).output_dim), encoder="sclip")
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = dense_features(model, images, "sclip")
        assert (tagalign.dense_features(images) - expected).abs().max() < 1e-5
        assert (tagalign.clip_dense_features(images) - expected).abs().max() < 1e-5
        global_embedding, _ = tagalign.encode_dense(images)
        assert (global_embedding - model.encode_image(images)).abs().max() < 1e-5
    head = tagalign.projector.head
    assert all(p.requires_grad for p in head.parameters())
    assert all(not p.requires_grad for p in model.parameters())


def test_checkpoints_record_the_family_and_refuse_another(towers, tmp_path):
    from tagalign.models import CheckpointMismatchError, get_tokenizer
    from tagalign.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    def build(clip):
        return TagAlign(clip, tag_embeddings=torch.randn(4, as_tower(clip.visual).output_dim), encoder="sclip")

    torch.manual_seed(5)
    model = build(towers["siglip"])
    images = torch.randn(2, 3, 64, 64)
    losses = model.loss(images, get_tokenizer(towers["siglip"])(["a red square", "a blue circle"]),
                        [[0, 2], [1]])
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    head = model.projector.head  # the trainable copy of the MAP value path
    assert head.proj.weight.grad.abs().sum() > 0 and head.kv.weight.grad[64:].abs().sum() > 0
    assert all(unit.gate.grad is not None for unit in model.projector.units)
    assert all(p.grad is None for p in towers["siglip"].parameters())  # the tower stays frozen
    with torch.no_grad():
        model.projector.head.proj.bias.add_(1.0)  # a trained state to carry
    path = tmp_path / "siglip.pth"
    save_checkpoint(model, path)
    saved = read_checkpoint(path)["clip"]
    assert (saved["family"], saved["map_readout"]) == ("siglip", "value")

    same = build(towers["siglip"])
    load_checkpoint(same, path)
    assert torch.equal(same.projector.head.proj.bias, model.projector.head.proj.bias)
    with pytest.raises(CheckpointMismatchError, match="siglip family.*eva02 family"):
        load_checkpoint(build(towers["eva02"]), path)
    with pytest.raises(CheckpointMismatchError, match="'value' MAP-head readout.*'value_mlp'"):
        load_checkpoint(build(_tiny(TIMM_FAMILIES["siglip"], 30, map_readout="value_mlp")), path)


def test_patch_14_at_336_reads_its_native_grid_and_windows_keep_to_it(tmp_path):
    """A ViT-L/14@336-shaped tiny tower (patch 14, 24x24 table): a 336 window is its native grid (the CLS readout is
    encode_image there), every encoder gives a 24x24 map, and windows that would leave the patch grid are refused."""
    import json

    from tagalign.segmentation.inference import InferenceConfig, check_patch_grid

    config = {"embed_dim": 32, "quick_gelu": True,
              "vision_cfg": {"image_size": 336, "layers": 3, "width": 64, "head_width": 32, "patch_size": 14},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path / "tiny-l14-336.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(3)
    model = randomize_affine_(load_clip(str(path)), seed=3)
    tower = as_tower(model.visual)
    assert tower.patch_size == (14, 14)
    window = torch.randn(1, 3, 336, 336)
    with torch.no_grad():
        stream = tower.run(tower.embed(window), tower.grid(window))
        assert (tower.dense_head()(stream[:, 0]) - model.encode_image(window)).abs().max() < 1e-5
        for encoder in ("vanilla", "maskclip", "sclip", "clearclip", "naclip"):
            assert dense_features(model, window, encoder).shape == (1, 32, 24, 24)
        assert dense_features(model, window, "surgery", depth=2).shape == (1, 32, 24, 24)
    for crop, stride in ((224, 112), (448, 224), (336, 112)):  # multiples of 112 = lcm(14, 16): both patch sizes
        check_patch_grid(InferenceConfig(crop=crop, stride=stride), 14)
        check_patch_grid(InferenceConfig(crop=crop, stride=stride), 16)
    with pytest.raises(ValueError, match="crop=320 is not a multiple of this tower's patch size 14.*308 or 322"):
        check_patch_grid(InferenceConfig(crop=320, stride=160), 14)
    with pytest.raises(ValueError, match="crop=320 .*or --pad-to 14"):
        check_patch_grid(InferenceConfig(crop=320, stride=160, pad_to=16), 14)  # 16 does not put it on the grid
    check_patch_grid(InferenceConfig(crop=336, stride=112, pad_to=56), 16)  # ProxyCLIP's: whole CLIP patches
    check_patch_grid(InferenceConfig(crop=73, stride=40, pad_to=14), 14)  # padding puts the window on the grid


def test_segment_with_the_models_own_pixel_statistics(tiny_clip, tmp_path):
    """segment(norm="model") normalises with the statistics of the CLIP's weights' config (a hub folder's
    preprocess_cfg here), exactly as if they were passed by hand, and differently from OpenAI's."""
    import json

    import numpy as np
    import open_clip
    from safetensors.torch import save_file

    from tagalign import segment

    folder = tmp_path / "hub"
    folder.mkdir()
    stats = ((0.3, 0.4, 0.5), (0.2, 0.25, 0.3))
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": open_clip.get_model_config("tagalign-tiny"),
         "preprocess_cfg": {"mean": list(stats[0]), "std": list(stats[1])}}))
    save_file({k: v.contiguous() for k, v in tiny_clip.state_dict().items()}, folder / "open_clip_model.safetensors")
    model = TagAlign(load_clip("tagalign-tiny", str(folder)), tag_embeddings=None).eval()
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    kwargs = dict(short_side=96, inference={"crop": 64, "stride": 32})
    own = segment(model, image, ["red", "blue", "green"], norm="model", **kwargs).probabilities
    by_hand = segment(model, image, ["red", "blue", "green"], norm=stats, **kwargs).probabilities
    openai = segment(model, image, ["red", "blue", "green"], norm="clip", **kwargs).probabilities
    assert np.array_equal(own, by_hand) and not np.allclose(own, openai, atol=1e-3)
