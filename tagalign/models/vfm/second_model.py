"""A frozen second vision model (VFM) beside CLIP: built by name with timm, fed the crop CLIP sees, re-normalised.

:func:`load_vfm` builds one (hub weights, a local weights file, or a tiny random model of the same architecture for
tests); :meth:`SecondModel.features` gives the feature map the VFM-guided encoders read, ``[B, C, h', w']`` on the VFM's
own grid (``H // patch``, or the squashed input's grid for SAM). The input arrives normalised with the statistics
the pipeline used for CLIP (``input_statistics``, ImageNet's unless set); it is un-normalised with them and
re-normalised with the VFM's own (ProxyCLIP does the same, from CLIP's statistics).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..clip import weights_hash
from .catalog import VFM_CATALOG, VfmSpec

logger = logging.getLogger(__name__)

__all__ = ["SecondModel", "VfmWeightsUnavailableError", "load_vfm", "vfm_for"]

IMAGENET_STATISTICS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class VfmWeightsUnavailableError(RuntimeError):
    """The VFM's weights could not be obtained (usually: no internet access)."""


class SecondModel(nn.Module):
    """A frozen timm model and what the methods read from it."""

    def __init__(self, name: str, spec: VfmSpec, model: nn.Module, input_size: int | None, source: str):
        super().__init__()
        self.name, self.spec, self.model, self.input_size, self.source = name, spec, model.eval(), input_size, source
        self.model.requires_grad_(False)
        config = getattr(model, "pretrained_cfg", {}) or {}
        mean, std = config.get("mean", IMAGENET_STATISTICS[0]), config.get("std", IMAGENET_STATISTICS[1])
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.input_statistics = IMAGENET_STATISTICS
        self.patch_size = tuple(model.patch_embed.patch_size)
        self._hash: str | None = None

    def train(self, mode: bool = True) -> SecondModel:
        super().train(mode)
        self.model.eval()  # always frozen
        return self

    @property
    def weights_hash(self) -> str:
        """A sha256 prefix of the VFM's weights (recorded in checkpoints)."""
        if self._hash is None:
            self._hash = weights_hash(self.model)
        return self._hash

    def identity(self) -> dict:
        return {"name": self.name, "timm_name": self.spec.timm_name, "source": self.source,
                "weights_hash": self.weights_hash}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (normalised with :attr:`input_statistics`) re-normalised with the VFM's statistics and, for
        SAM, squashed bilinearly to its input size; otherwise cut to whole patches."""
        mean, std = (torch.tensor(s, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
                     for s in self.input_statistics)
        x = (images * std + mean - self.mean.to(images)) / self.std.to(images)
        if self.input_size is not None:
            return F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        h, w = self.grid(images)  # a patch conv drops the last partial patch (DINO's own code does); timm refuses it
        return x[..., : h * self.patch_size[0], : w * self.patch_size[1]]

    def grid(self, images: torch.Tensor) -> tuple[int, int]:
        """The VFM's feature grid for ``images``."""
        height, width = (self.input_size, self.input_size) if self.input_size is not None else images.shape[-2:]
        return height // self.patch_size[0], width // self.patch_size[1]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, h', w']``: the last block's tokens after the final norm (prefix tokens dropped), or SAM's neck."""
        x = self.prepare(images)
        out = self.model.forward_features(x)
        if self.spec.readout == "neck":
            return out
        return self._token_map(out[:, self.model.num_prefix_tokens:], images)

    @torch.no_grad()
    def values(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C, h', w']``: the last block's attention values (all heads, prefix tokens dropped), as LPOSS reads
        DINO (a hook on ``blocks[-1].attn.qkv``). Defined on the ViT families (not SAM)."""
        return self.attention_part(images, "v")

    @torch.no_grad()
    def attention_part(self, images: torch.Tensor, part: str, prepared: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, C, h', w']``: the last block's attention ``part`` (``q``, ``k`` or ``v``; all heads, before any q/k
        norm, prefix tokens dropped) of ``images`` (or of an input the caller ``prepared`` itself, fed unchanged)."""
        if self.spec.readout == "neck":
            raise ValueError(f"second model '{self.name}' has no per-token attention values to read (SAM's encoder "
                             "is windowed); use a DINO or DINOv2 model")
        captured = []
        qkv = self.model.blocks[-1].attn.qkv
        handle = qkv.register_forward_hook(lambda module, inputs, output: captured.append(output))
        x = self.prepare(images) if prepared is None else prepared
        try:
            self.model.forward_features(x)
        finally:
            handle.remove()
        width = captured[0].shape[-1] // 3
        start = "qkv".index(part) * width
        tokens = captured[0][:, self.model.num_prefix_tokens:, start:start + width]
        h, w = x.shape[-2] // self.patch_size[0], x.shape[-1] // self.patch_size[1]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)

    @torch.no_grad()
    def sam_last_attention(self, prepared: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's last (global) block on an input the caller ``prepared`` (SAM-normalised, ``input_size`` square):
        ``(attention [B, heads, n, n], values [B, heads, n, head_dim])`` over its ``n`` tokens, the attention
        ``softmax(q·kᵀ·s + decomposed relative positions)`` as the block computes it (Trident reads both)."""
        from timm.models.vision_transformer_sam import get_decomposed_rel_pos_bias

        if self.spec.readout != "neck":
            raise ValueError(f"second model '{self.name}' is not SAM's image encoder")
        attention = self.model.blocks[-1].attn
        captured = []
        handle = attention.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0]))
        try:
            self.model.forward_features(prepared)
        finally:
            handle.remove()
        x = captured[0]
        batch, height, width, _ = x.shape
        n = height * width
        qkv = attention.qkv(x.reshape(batch, n, -1)).view(batch, n, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * attention.num_heads, n, -1).unbind(0)
        q, k = attention.q_norm(q), attention.k_norm(k)
        scores = (q * attention.scale) @ k.transpose(-2, -1)
        if attention.use_rel_pos:
            scores = scores + get_decomposed_rel_pos_bias(q, attention.rel_pos_h, attention.rel_pos_w,
                                                          (height, width), (height, width))
        shape = (batch, attention.num_heads, n, -1)
        return scores.softmax(dim=-1).view(shape), v.view(shape)

    def _token_map(self, tokens: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        h, w = self.grid(images)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def _check_patch_embedding(name: str, spec: VfmSpec, path: str, model: nn.Module) -> None:
    """timm adapts a checkpoint's patch embedding to the model it loads into (a ViT-B/16 file into a B/8 model loads
    without a word): refuse a file whose patch embedding is not this architecture's."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, "pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("model", "state_dict", "teacher"):
            state = state.get(wrapper, state) if isinstance(state, dict) else state
        shapes = {key: tuple(value.shape) for key, value in state.items() if torch.is_tensor(value)}
    expected = tuple(model.patch_embed.proj.weight.shape)
    found = [shape for key, shape in shapes.items() if key.endswith("patch_embed.proj.weight")]
    if found and found[0] != expected:
        raise ValueError(f"second model '{name}': {path} is not a weights file of timm '{spec.timm_name}': its patch "
                         f"embedding is {list(found[0])}, the architecture's is {list(expected)} (timm would resample "
                         f"it silently)")


@torch.no_grad()
def _with_random_affine(model: nn.Module, scale: float = 0.2) -> nn.Module:
    """Non-zero biases, relative positions and non-identity norms, as trained weights have (a fresh timm model has
    none of them)."""
    for name, param in model.named_parameters():
        if (name.endswith("bias") and param.ndim == 1) or "rel_pos" in name:  # SAM's relative positions start at 0
            param.copy_(scale * torch.randn_like(param))
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if "Norm" in type(module).__name__ and isinstance(weight, torch.Tensor) and weight.ndim == 1:
            weight.copy_(1 + scale * torch.randn_like(weight))
    return model


def load_vfm(name: str, pretrained: bool | str = True, device: str | torch.device = "cpu",
             tiny: bool = False) -> SecondModel:
    """The VFM ``name`` (a key of :data:`VFM_CATALOG`), frozen, in eval mode.

    ``pretrained``: True for the hub weights (timm downloads and caches them under ``$HF_HOME``), a local weights file
    (``.safetensors``/``.pth`` as the hub serves them), or False for random weights. ``tiny``: the same architecture
    shrunk (width 64, 2 blocks) with seeded random weights (non-zero biases and norms; the same model every call),
    for tests and CPU experiments.
    """
    import timm

    if name not in VFM_CATALOG:
        raise ValueError(f"unknown second model '{name}'; choose from {', '.join(VFM_CATALOG)}")
    spec = VFM_CATALOG[name]
    if tiny:
        kwargs = {**spec.model_kwargs, **spec.tiny_kwargs}
        with torch.random.fork_rng():
            torch.manual_seed(sum(map(ord, name)))  # the same tiny model every time: checkpoints can name it
            # the tagged name keeps the weights' pretrained_cfg (their mean/std) with random weights
            model = _with_random_affine(timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **kwargs))
        input_size = kwargs.get("img_size") if spec.input_size is not None else None
        return SecondModel(name, spec, model, input_size, "tiny random").to(device)
    kwargs = dict(spec.model_kwargs)
    source = "random"
    if isinstance(pretrained, str):
        if not os.path.isfile(pretrained):
            raise FileNotFoundError(f"second model '{name}': weights file {pretrained} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": pretrained}
        source = pretrained
    elif pretrained:
        source = f"hf-hub:timm/{spec.timm_name}"
    try:
        model = timm.create_model(spec.timm_name, pretrained=bool(pretrained), num_classes=0, **kwargs)
        if isinstance(pretrained, str):
            _check_patch_embedding(name, spec, pretrained, model)
    except (OSError, RuntimeError, KeyError) as err:
        if isinstance(pretrained, str):
            raise ValueError(f"second model '{name}': {pretrained} is not a weights file of timm "
                             f"'{spec.timm_name}' (expected that architecture's state dict, as the hub serves it "
                             f"at timm/{spec.timm_name}): {str(err)[:300]}") from err
        if not pretrained:
            raise
        raise VfmWeightsUnavailableError(
            f"could not download the weights of second model '{name}' (timm '{spec.timm_name}', hub "
            f"timm/{spec.timm_name}): {err}\nOn a machine without internet access, download the weights file "
            f"there and pass its path: load_vfm('{name}', pretrained='/path/model.safetensors') or --vfm-weights."
        ) from err
    logger.info("second model %s: timm %s, weights %s", name, spec.timm_name, source)
    return SecondModel(name, spec, model, spec.input_size, source).to(device)


def vfm_for(encoder: str, name: str | None = None, weights: str | None = None, saved: dict | None = None,
            device: str | torch.device = "cpu") -> SecondModel | None:
    """The second model an encoder reads (None for the encoders that read CLIP alone).

    ``name``: a key of :data:`VFM_CATALOG` (default: the checkpoint's, else the encoder's own, ProxyCLIP's DINO
    ViT-B/8). ``weights``: a local file, ``tiny`` (a seeded tiny random model) or None: the checkpoint's source where
    it names a file or a tiny model, else the hub's. ``saved``: a checkpoint's record of its VFM.
    """
    from ..encoders import needs_vfm

    default = needs_vfm(encoder)
    if not default:
        if name is not None or weights is not None:
            raise ValueError(f"encoder '{encoder}' reads no second vision model; leave out --vfm/--vfm-weights")
        return None
    name = name or (saved or {}).get("name") or default
    if weights is None and saved and saved.get("name") == name:
        source = str(saved.get("source", ""))
        weights = "tiny" if source == "tiny random" else source if os.path.isfile(source) else None
    if weights == "tiny":
        return load_vfm(name, tiny=True, device=device)
    return load_vfm(name, pretrained=weights if weights is not None else True, device=device)
