"""CLIP loading (names, config files, tags, local files, QuickGELU) and prompt-ensemble text embeddings."""

from __future__ import annotations

import copy
import json
import time

import open_clip
import pytest
import torch
from random_affine import randomize_affine_

from tagalign.models import CheckpointMismatchError, ClipWeightsUnavailableError, encode_texts, get_tokenizer, load_clip

OPENAI_LIKE = {  # heads = width // 64 as OpenAI's state-dict loader assumes
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 128, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2},
}


def _gelu_types(model):
    return {type(m).__name__ for m in model.modules() if "GELU" in type(m).__name__}


@pytest.fixture
def openai_like_config(tmp_path):
    path = tmp_path / "openai-like-test.json"
    path.write_text(json.dumps(OPENAI_LIKE))
    return path


def test_tiny_model_is_frozen_and_identified():
    torch.manual_seed(0)
    first = load_clip("tagalign-tiny")
    torch.manual_seed(0)
    second = load_clip("tagalign-tiny")
    torch.manual_seed(1)
    third = load_clip("tagalign-tiny")
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    assert first.tagalign_identity.model_name == "tagalign-tiny"
    assert first.tagalign_identity.weights_hash == second.tagalign_identity.weights_hash
    assert first.tagalign_identity.weights_hash != third.tagalign_identity.weights_hash


def test_config_json_path(openai_like_config):
    model = load_clip(str(openai_like_config))
    assert model.tagalign_identity.model_name == "openai-like-test"
    assert model.visual.conv1.out_channels == 128
    assert _gelu_types(model) == {"GELU"}  # no OpenAI weights, config says plain GELU


def test_unknown_name_and_missing_config_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown CLIP model 'ViT-Q-99'"):
        load_clip("ViT-Q-99")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_clip(str(tmp_path / "nope.json"))
    with pytest.raises(ClipWeightsUnavailableError, match="neither a local file nor a pretrained tag"):
        load_clip("tagalign-tiny", pretrained="no-such-tag")


def test_offline_tag_download_names_model_tag_and_local_file_option():
    start = time.monotonic()
    with pytest.raises(ClipWeightsUnavailableError) as err:
        load_clip("ViT-B-32", pretrained="openai")
    message = str(err.value)
    assert "'openai'" in message and "'ViT-B-32'" in message and "--pretrained /path/to/weights.pt" in message
    assert time.monotonic() - start < 60


def test_openai_tag_gets_quick_gelu(openai_like_config, tmp_path, monkeypatch):
    """The tag path: open_clip's download is replaced by a local file; the real build/load code runs."""
    torch.manual_seed(5)
    source = load_clip(str(openai_like_config))
    weights = tmp_path / "weights.pt"
    torch.save(source.state_dict(), weights)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "openai-like-test", {"openai": {"url": "", "hf_hub": ""}})
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: str(weights))
    model = load_clip(str(openai_like_config), pretrained="openai")
    assert _gelu_types(model) == {"QuickGELU"}
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    # same tensors, other activation: another model, so another identity
    assert model.tagalign_identity.weights_hash != source.tagalign_identity.weights_hash


def test_openai_torchscript_archive_gets_quick_gelu(openai_like_config, tmp_path):
    torch.manual_seed(6)
    source = load_clip(str(openai_like_config), force_quick_gelu=True)
    source.half().float()  # OpenAI ships fp16 weights and open_clip's loader rounds through fp16
    source.output_dict = False
    mask = source._buffers.pop("attn_mask")  # OpenAI's archives hold the causal mask as a constant, not a buffer
    source.attn_mask = mask
    archive = tmp_path / "ViT-tiny.pt"
    image, text = torch.randn(1, 3, 64, 64), get_tokenizer(source)(["a photo"])
    torch.jit.trace(source, (image, text), check_trace=False).save(str(archive))
    model = load_clip("ViT-B-16", pretrained=str(archive))
    assert _gelu_types(model) == {"QuickGELU"}
    with torch.no_grad():
        assert torch.allclose(model.encode_image(image), source.encode_image(image), atol=1e-5)


def test_encode_texts_is_mean_of_unnormalised_template_embeddings(tiny_clip):
    names, templates = ["cat", "red sofa", "tv"], ["a photo of a {}.", "a {} in the scene."]
    emb = encode_texts(tiny_clip, names, templates, cache_dir=False)
    tokenizer = get_tokenizer(tiny_clip)
    with torch.no_grad():
        for i, name in enumerate(names):
            per_template = tiny_clip.encode_text(tokenizer([t.format(name) for t in templates]))
            assert torch.allclose(emb[i], per_template.mean(0), atol=1e-5)
    chunked = encode_texts(tiny_clip, names, templates, chunk_size=1, cache_dir=False)
    assert torch.allclose(emb, chunked, atol=1e-5)


def test_text_embedding_cache_is_keyed_and_used(tiny_clip, tmp_path):
    cache = tmp_path / "emb"
    first = encode_texts(tiny_clip, ["cat", "dog"], cache_dir=cache)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and not list(cache.glob(".*tmp"))
    torch.save(torch.zeros_like(first), files[0])  # a cache hit must return the file's content
    assert torch.equal(encode_texts(tiny_clip, ["cat", "dog"], cache_dir=cache), torch.zeros_like(first))
    other = encode_texts(tiny_clip, ["cat", "dog"], templates=["{}"], cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 2 and not torch.equal(other, first)
    assert len({p.name for p in cache.glob("*.pt")}) == 2
    encode_texts(tiny_clip, ["dog", "cat"], cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 3


def test_bad_templates_are_rejected(tiny_clip):
    with pytest.raises(ValueError, match="must contain"):
        encode_texts(tiny_clip, ["cat"], templates=["a photo"], cache_dir=False)


def _openai_vit_b16_archive(source, path):
    """Save ``source`` as OpenAI's release does: a traced TorchScript archive holding the causal mask as a constant."""
    scripted = copy.deepcopy(source)
    scripted.output_dict = False
    scripted.attn_mask = scripted._buffers.pop("attn_mask")
    image, text = torch.randn(1, 3, 224, 224), get_tokenizer(source)(["a photo"])
    torch.jit.trace(scripted, (image, text), check_trace=False).save(str(path))


def test_openai_vit_b16_weights_get_quick_gelu_by_every_route(tmp_path, monkeypatch, caplog):
    """One set of OpenAI-style ViT-B/16 weights, saved the ways users get them, must give one model."""
    from safetensors.torch import save_file

    from tagalign.models import TagAlign, load_checkpoint, save_checkpoint

    torch.manual_seed(11)
    source = randomize_affine_(load_clip("ViT-B-16-quickgelu"), seed=11)
    source.half().float()  # OpenAI ships fp16; every route below then holds exactly these values
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    archive = tmp_path / "ViT-B-16.pt"
    _openai_vit_b16_archive(source, archive)
    hub = tmp_path / "hub"
    hub.mkdir()
    save_file(state, str(hub / "open_clip_model.safetensors"))
    hub_config = {"model_cfg": {**open_clip.get_model_config("ViT-B-16"), "quick_gelu": True},
                  "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073]}}
    (hub / "open_clip_config.json").write_text(json.dumps(hub_config))
    bare = tmp_path / "bare" / "open_clip_pytorch_model.bin"
    bare.parent.mkdir()
    torch.save(state, bare)
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: str(bare))

    routes = {
        "openai tag": load_clip("ViT-B-16", pretrained="openai"),
        "TorchScript archive": load_clip("ViT-B-16", pretrained=str(archive)),
        "hub directory": load_clip("ViT-B-16", pretrained=str(hub)),
        "hub weights file": load_clip("ViT-B-16", pretrained=str(hub / "open_clip_model.safetensors")),
        "bare state dict, -quickgelu name": load_clip("ViT-B-16-quickgelu", pretrained=str(bare)),
        "bare state dict, force_quick_gelu": load_clip("ViT-B-16", pretrained=str(bare), force_quick_gelu=True),
    }
    caplog.clear()
    with caplog.at_level("WARNING", logger="tagalign.models.clip"):
        gelu = load_clip("ViT-B-16", pretrained=str(bare))  # the route that cannot know: GELU, and it says so
    assert "nn.GELU" in caplog.text and "ViT-B-16-quickgelu" in caplog.text
    assert _gelu_types(gelu) == {"GELU"}

    images = torch.randn(1, 3, 224, 224)
    features = {}
    for route, model in routes.items():
        assert _gelu_types(model) == {"QuickGELU"}, route
        assert model.tagalign_identity.activation == "quick_gelu", route
        with torch.no_grad():
            features[route] = TagAlign(model).dense_features(images)
    reference = features["bare state dict, -quickgelu name"]
    for route, value in features.items():
        assert (value - reference).abs().max().item() <= 1e-5, route
    hashes = {model.tagalign_identity.weights_hash for model in routes.values()}
    assert len(hashes) == 1 and gelu.tagalign_identity.weights_hash not in hashes
    with torch.no_grad():
        assert (TagAlign(gelu).dense_features(images) - reference).abs().max().item() > 1e-3

    checkpoint = tmp_path / "quickgelu.pth"
    save_checkpoint(TagAlign(routes["TorchScript archive"]), checkpoint)
    with pytest.raises(CheckpointMismatchError, match=r"QuickGELU.*GELU \(nn.GELU\)"):
        load_checkpoint(TagAlign(gelu), checkpoint)
    from tagalign.api import load

    reloaded = load(checkpoint, pretrained=str(bare))  # the checkpoint's activation carries over to a bare file
    assert reloaded.clip.tagalign_identity.activation == "quick_gelu"


def test_metaclip_style_tag_gets_quick_gelu_under_the_plain_name(openai_like_config, tmp_path, monkeypatch):
    """A MetaCLIP/DFN-style tag (open_clip marks it quick_gelu) on a config without quick_gelu: the weights were
    trained with QuickGELU, so the model must be built with it; GELU would give other (wrong) features."""
    torch.manual_seed(9)
    source = randomize_affine_(load_clip(str(openai_like_config), force_quick_gelu=True), seed=9)
    weights = tmp_path / "metaclip.pt"
    torch.save(source.state_dict(), weights)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "openai-like-test",
                        {"metaclip_400m": {"url": "", "hf_hub": "", "quick_gelu": True}})
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: str(weights))
    model = load_clip(str(openai_like_config), pretrained="metaclip_400m")
    assert _gelu_types(model) == {"QuickGELU"}
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(image), source.encode_image(image), atol=1e-5)
        gelu = load_clip(str(openai_like_config), pretrained=str(weights), force_quick_gelu=False)
        assert not torch.allclose(gelu.encode_image(image), source.encode_image(image), atol=1e-3)


def test_pixel_statistics_come_from_the_weights_config(tmp_path):
    from tagalign.models import clip_normalization
    from tagalign.segmentation.evaluate import _statistics_255

    openai = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    assert clip_normalization("ViT-B-16-SigLIP2", "webli") == ((0.5,) * 3, (0.5,) * 3)
    assert clip_normalization("ViT-B-16-quickgelu", "metaclip_400m") == openai
    assert clip_normalization("tagalign-tiny") == openai  # no weights: open_clip's default
    folder = tmp_path / "hub"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": open_clip.get_model_config("tagalign-tiny"), "preprocess_cfg": {"mean": [0.1, 0.2, 0.3],
                                                                                       "std": [0.4, 0.5, 0.6]}}))
    assert clip_normalization("tagalign-tiny", str(folder)) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    statistics = _statistics_255("model", "ViT-B-16-SigLIP2", "webli")
    assert statistics == {"mean": [127.5] * 3, "std": [127.5] * 3}
    assert _statistics_255("model")["mean"] == [255 * m for m in openai[0]]  # the default OpenAI ViT-B/16
