"""Contrastive pretraining of a small CLIP (the quickstart's tiny CLIP) and its open_clip folder."""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from tagalign.data.synthetic import CAPTION_FRAMES, EMPTY_CAPTIONS, describe_objects
from tagalign.models.clip import load_clip
from tagalign.models.pretrain import (
    CLIP_MEAN,
    CLIP_STD,
    PretrainConfig,
    pretrain_clip,
    save_open_clip_folder,
    zero_shot_accuracy,
)

#: A 32-pixel, two-block CLIP: pretraining it takes a second.
SMALL = {"embed_dim": 16, "quick_gelu": True,
         "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 16},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220)}


def _colour_pairs(rng: np.random.Generator, count: int) -> tuple[torch.Tensor, list[str]]:
    """Plain coloured 32x32 images captioned with their colour."""
    names = [list(COLOURS)[i] for i in rng.integers(len(COLOURS), size=count)]
    pixels = torch.tensor([COLOURS[n] for n in names], dtype=torch.uint8)[:, :, None, None].expand(-1, -1, 32, 32)
    return pixels.contiguous(), [f"a {n} picture" for n in names]


def test_pretraining_learns_the_pairs_and_is_reproducible():
    config = PretrainConfig(steps=40, batch_size=12, lr=3e-3, warmup=2, seed=3, log_every=20)
    model = pretrain_clip(SMALL, _colour_pairs, config)
    again = pretrain_clip(SMALL, _colour_pairs, config)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    pixels, _ = _colour_pairs(np.random.default_rng(9), 30)
    labels = [list(COLOURS).index(next(n for n, c in COLOURS.items() if tuple(p[:, 0, 0].tolist()) == c))
              for p in pixels]
    untrained = open_clip.model.CLIP(**SMALL).eval()
    prompts = [f"a {n} picture" for n in COLOURS]
    assert zero_shot_accuracy(model, pixels, labels, prompts) == 1.0
    assert zero_shot_accuracy(untrained, pixels, labels, prompts) < 1.0


def test_zero_shot_accuracy_is_top1_of_cosines():
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**SMALL).eval()
    for name, tensor in model.state_dict().items():  # non-trivial biases and LayerNorms
        if name.endswith("bias") or "ln" in name:
            tensor.add_(torch.randn_like(tensor) * 0.2)
    pixels = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    prompts = ["a cat", "a red dog", "a tree", "nothing"]
    tokens = open_clip.get_tokenizer("ViT-B-16")(prompts)
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens), dim=-1)
        x = (pixels.float() / 255 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        image = F.normalize(model.encode_image(x), dim=-1)
    predicted = (image @ text.T).argmax(1)
    labels = torch.randint(0, 4, (20,))
    labels[:5] = predicted[:5]
    expected = float((predicted == labels).float().mean())
    assert zero_shot_accuracy(model, pixels, labels.tolist(), prompts) == pytest.approx(expected)


def test_saved_folder_loads_in_open_clip_and_load_clip(tmp_path):
    torch.manual_seed(1)
    model = open_clip.model.CLIP(**SMALL).eval()
    folder = save_open_clip_folder(model, SMALL, tmp_path / "small_clip")
    assert sorted(p.name for p in folder.iterdir()) == ["open_clip_config.json", "open_clip_model.safetensors"]
    assert json.loads((folder / "open_clip_config.json").read_text())["model_cfg"] == SMALL
    assert not (tmp_path / "small_clip.partial").exists()
    direct = open_clip.create_model(f"local-dir:{folder}")
    config = tmp_path / "small-clip.json"
    config.write_text(json.dumps(SMALL))
    ours = load_clip(str(config), pretrained=str(folder))
    for loaded in (direct, ours):
        state = loaded.state_dict()
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert ours.tagalign_identity.activation == "quick_gelu"


def test_captions_say_what_they_mention():
    rng = np.random.default_rng(0)
    objects = [("red", "square"), ("blue", "circle")]
    seen_colourless = seen_background = False
    for _ in range(60):
        caption, mentioned, background = describe_objects(objects, rng)
        assert sorted(shape for _, shape in mentioned) == ["circle", "square"]
        for colour, shape in mentioned:
            assert (f"a {colour} {shape}" if colour else f"a {shape}") in caption
            assert colour in (None, dict(map(reversed, objects))[shape])
            seen_colourless |= colour is None
        assert background == ("background" in caption)
        assert any(caption.startswith(f.split("{}")[0]) for f in CAPTION_FRAMES)
        seen_background |= background
    assert seen_colourless and seen_background
    caption, mentioned, background = describe_objects([], rng)
    assert caption in EMPTY_CAPTIONS and mentioned == [] and background


def test_a_timm_tower_pretrains_and_reloads_through_its_hub_folder(tmp_path):
    """The quickstart's --clip tagalign-tiny-mapvit-112 path: a custom-text config (timm tower with a MAP head)
    pretrains as open_clip's CustomTextCLIP, learns the pairs, and loads back bit for bit with its family."""
    config = open_clip.get_model_config("tagalign-tiny-mapvit-112")
    small = {**config, "vision_cfg": {**config["vision_cfg"], "image_size": 32}}
    model = pretrain_clip(small, _colour_pairs, PretrainConfig(steps=40, batch_size=12, lr=3e-3, warmup=2, seed=3,
                                                                log_every=20))
    assert type(model).__name__ == "CustomTextCLIP"
    pixels, _ = _colour_pairs(np.random.default_rng(9), 30)
    labels = [list(COLOURS).index(next(n for n, c in COLOURS.items() if tuple(p[:, 0, 0].tolist()) == c))
              for p in pixels]
    assert zero_shot_accuracy(model, pixels, labels, [f"a {n} picture" for n in COLOURS]) == 1.0
    folder = save_open_clip_folder(model, small, tmp_path / "mapvit")
    loaded = load_clip("tagalign-tiny-mapvit-112", pretrained=str(folder))
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert loaded.tagalign_identity.family == "siglip"
