"""The TagAlign model: frozen parts, losses, masks(), and checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tagalign.models import (
    CheckpointMismatchError,
    TagAlign,
    get_tokenizer,
    load_checkpoint,
    load_clip,
    save_checkpoint,
)
from tagalign.models.encoders import ENCODERS, surgery_tokens


@pytest.fixture
def model(tiny_clip):
    torch.manual_seed(3)
    return TagAlign(tiny_clip, tag_embeddings=torch.randn(12, 64), tag_names=[f"tag{i}" for i in range(12)])


def _randomise_projector(model):
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.3 * torch.randn_like(p))


def test_only_projector_and_temperatures_train(model):
    model.train()
    assert not model.clip.training and model.projector.training
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.startswith(("projector.", "itc_loss.", "tag_loss."))}
    assert "itc_loss.temperature.logit_scale" in trainable and "tag_loss.temperature.logit_scale" in trainable
    tokens = get_tokenizer(model.clip)(["a red square", "a blue circle"])
    losses = model.loss(torch.randn(2, 3, 224, 224), tokens, [[0, 3], []])
    assert set(losses) == {"loss_itc", "loss_tag", "itc_scale", "tag_scale"}
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    assert all(p.grad is None for p in model.clip.parameters())
    assert model.projector.units[0].gate.grad is not None


def test_loss_weights_are_independent(tiny_clip):
    """Reference bug B1: a zero image-text weight must not switch the tag loss off."""
    tag_only = TagAlign(tiny_clip, tag_embeddings=torch.randn(5, 64), loss={"itc_weight": 0.0})
    losses = tag_only.loss(torch.randn(2, 3, 224, 224), None, torch.eye(5)[:2])
    assert set(losses) == {"loss_tag", "tag_scale"}
    itc_only = TagAlign(tiny_clip, loss={"tag_weight": 0.0})
    tokens = get_tokenizer(tiny_clip)(["a", "b"])
    assert set(itc_only.loss(torch.randn(2, 3, 224, 224), tokens, None)) == {"loss_itc", "itc_scale"}


def test_image_feature_is_mean_of_projected_map(model):
    """The tag loss must see mean_hw(projector(tokens)) — compare against the loss computed from that by hand."""
    _randomise_projector(model)
    images = torch.randn(2, 3, 224, 224)
    targets = torch.zeros(2, 12)
    targets[0, [1, 2]] = 1
    targets[1, 5] = 1
    v = model.dense_features(images).mean(dim=(2, 3))
    expected = model.tag_loss(v, model.tag_embeddings, targets)
    assert model.loss(images, get_tokenizer(model.clip)(["x", "y"]), targets)["loss_tag"].item() == pytest.approx(
        expected.item(), rel=1e-6)


def test_masks_shape_range_and_formula(model):
    _randomise_projector(model)
    images = torch.randn(2, 3, 448, 320)
    texts = torch.randn(3, 64)
    masks = model.masks(images, texts, clip_w=0.3, scale=10.0, bias=-2.5)
    assert masks.shape == (2, 3, 448, 320)
    assert masks.min() >= 0 and masks.max() <= 1

    with torch.no_grad():  # the formula of spec §6.1, computed here from the tokens
        tokens = surgery_tokens(model.clip.visual, images, 6)[:, 1:]
        patches = tokens.transpose(1, 2).reshape(2, 64, 28, 20)
        ours = model.projector(patches)
        frozen = (model.clip.visual.ln_post(patches.permute(0, 2, 3, 1)) @ model.clip.visual.proj).permute(0, 3, 1, 2)
        t = F.normalize(texts, dim=-1)

        def prob(f):
            return torch.sigmoid(10 * torch.einsum("bchw,nc->bnhw", F.normalize(f, dim=1), t) - 2.5)

        expected = F.interpolate(0.7 * prob(ours) + 0.3 * prob(frozen), size=(448, 320), mode="bilinear")
    assert torch.allclose(masks, expected, atol=1e-6)
    assert torch.allclose(model.clip_dense_features(images), frozen, atol=1e-6)


def test_checkpoint_round_trip_is_exact(model, tiny_clip, tmp_path):
    _randomise_projector(model)
    path = tmp_path / "ckpt.pth"
    save_checkpoint(model, path, extra={"iteration": 7})
    fresh = TagAlign(tiny_clip, tag_embeddings=model.tag_embeddings, tag_names=[f"tag{i}" for i in range(12)])
    payload = load_checkpoint(fresh, path)
    assert payload["extra"] == {"iteration": 7}
    saved, loaded = model.trainable_state_dict(), fresh.trainable_state_dict()
    assert set(saved) == set(loaded) and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert not any(k.startswith("clip.") for k in torch.load(path, weights_only=False)["state_dict"])
    images = torch.randn(1, 3, 224, 224)
    assert torch.equal(model.dense_features(images), fresh.dense_features(images))


def test_checkpoint_refuses_other_clip(model, tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(model, path)
    torch.manual_seed(123)
    other = TagAlign(load_clip("tagalign-tiny"))
    with pytest.raises(CheckpointMismatchError, match="was trained on CLIP 'tagalign-tiny'"):
        load_checkpoint(other, path)


def test_non_checkpoint_file_is_rejected(model, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointMismatchError, match="not a tagalign checkpoint"):
        load_checkpoint(model, path)


def test_scoring_options_of_reference_spec_7(model):
    """Paper-vs-code options, each against its formula written out here (spec §7.3, §7.4; CLIP Surgery §6.2)."""
    _randomise_projector(model)
    torch.manual_seed(9)
    images, texts = torch.randn(1, 3, 224, 192), torch.randn(5, 64)
    with torch.no_grad():
        tokens = surgery_tokens(model.clip.visual, images, 6)
        patches = tokens[:, 1:].transpose(1, 2).reshape(1, 64, 14, 12)
        visual = model.clip.visual
        ours = model.projector(patches)
        frozen = (visual.ln_post(patches.permute(0, 2, 3, 1)) @ visual.proj).permute(0, 3, 1, 2)
        cls = F.normalize(visual.ln_post(tokens[:, 0]) @ visual.proj, dim=-1)
    t = F.normalize(texts, dim=-1)

    def cos(f):
        return torch.einsum("bchw,nc->bnhw", F.normalize(f, dim=1), t)

    def up(x):
        return F.interpolate(x, size=(224, 192), mode="bilinear")

    softmax = model.masks(images, texts, clip_w=0.0, score="softmax")
    assert torch.allclose(softmax, up(torch.softmax(10 * cos(ours), dim=1)), atol=1e-6)
    mixed = model.masks(images, texts, mix="similarities")
    assert torch.allclose(mixed, up(torch.sigmoid(10 * (0.7 * cos(ours) + 0.3 * cos(frozen)) - 2.5)), atol=1e-6)

    def surgery(similarity):  # per class c: w_c * s_c - (1/C) sum_c' w_c' * s_c'
        w = torch.softmax(2 * (cls @ t.t()), dim=1)[0]
        w = w / w.mean()
        weighted = [w[c] * similarity[:, c] for c in range(5)]
        return torch.stack([weighted[c] - sum(weighted) / 5 for c in range(5)], dim=1)

    surgical = model.masks(images, texts, clip_w=0.0, feature_surgery=True)
    assert torch.allclose(surgical, up(torch.sigmoid(10 * surgery(cos(ours)) - 2.5)), atol=1e-6)
    assert not torch.allclose(surgical, model.masks(images, texts, clip_w=0.0), atol=1e-3)


def test_one_shared_temperature_is_an_option(tiny_clip):
    shared = TagAlign(tiny_clip, tag_embeddings=torch.randn(6, 64), loss={"shared_temperature": True})
    assert shared.tag_loss.temperature is shared.itc_loss.temperature
    two = TagAlign(tiny_clip, tag_embeddings=torch.randn(6, 64))
    count = sum(p.numel() for p in shared.parameters() if p.requires_grad)
    assert count == sum(p.numel() for p in two.parameters() if p.requires_grad) - 1
    losses = shared.loss(torch.randn(2, 3, 224, 224), get_tokenizer(tiny_clip)(["a", "b"]), [[0], [1, 2]])
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    assert shared.itc_loss.temperature.logit_scale.grad.abs() > 0


# ------------------------------------------------------------------------------------- TagAlign on any encoder
@pytest.mark.parametrize("encoder", ["clearclip", "naclip", "maskclip"])
def test_projector_reads_the_chosen_encoders_tokens(encoder, tiny_clip):
    """The frozen branch is that encoder's dense features (dense_features, tested against each formula), the
    untrained projector starts there too, and the token sequence starts with CLIP's own unmodified CLS token."""
    from tagalign.models import dense_features

    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(4, 64), encoder=encoder)
    images = torch.randn(2, 3, 64, 96)
    expected = dense_features(tiny_clip, images, encoder=encoder)
    assert torch.allclose(model.clip_dense_features(images), expected, atol=1e-5)
    assert torch.allclose(model.dense_features(images), expected, atol=1e-5)  # gates start at 0
    assert not torch.allclose(expected, dense_features(tiny_clip, images, encoder="surgery"), atol=1e-3)
    native = torch.randn(1, 3, 224, 224)  # open_clip's own forward needs the native size
    global_embedding, patches = model.encode_dense(native)
    assert torch.allclose(global_embedding, tiny_clip.encode_image(native), atol=1e-5)
    assert torch.allclose(patches, model.token_map(ENCODERS[encoder](tiny_clip.visual, native), native), atol=1e-6)
    assert model.config["encoder"] == encoder


def test_training_on_another_encoder_moves_only_the_projector(tiny_clip):
    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(6, 64), encoder="naclip", encoder_options={"sigma": 3.0})
    images = torch.randn(2, 3, 64, 64)
    tokens = get_tokenizer(tiny_clip)(["a red square", "a blue circle"])
    losses = model.loss(images, tokens, torch.tensor([[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0]]).float())
    (losses["loss_itc"] + losses["loss_tag"]).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("projector.", "itc_loss.", "tag_loss.")) for n in grads)


def test_checkpoint_records_the_encoder_and_refuses_another(tiny_clip, tmp_path):
    import tagalign

    model = TagAlign(tiny_clip, tag_embeddings=torch.randn(4, 64), encoder="naclip", encoder_options={"sigma": 3.0})
    path = tmp_path / "naclip.pth"
    save_checkpoint(model, path)
    clip_file = tmp_path / "clip.pt"
    torch.save(tiny_clip.state_dict(), clip_file)
    loaded = tagalign.load(path, clip="tagalign-tiny", pretrained=str(clip_file))
    assert (loaded.encoder, loaded.encoder_options) == ("naclip", {"sigma": 3.0})
    images = torch.randn(1, 3, 64, 64)
    assert torch.allclose(loaded.dense_features(images), model.dense_features(images), atol=1e-6)
    with pytest.raises(CheckpointMismatchError, match=r"'naclip' encoder .*--encoder naclip"):
        tagalign.load(path, clip="tagalign-tiny", pretrained=str(clip_file), encoder="clearclip")
    with pytest.raises(CheckpointMismatchError, match=r"options \{'sigma': 3.0\}"):
        load_checkpoint(TagAlign(tiny_clip, encoder="naclip"), path)
    with pytest.raises(ValueError, match="unknown encoder 'dino'"):
        TagAlign(tiny_clip, encoder="dino")
