"""Load open_clip models (names, config files, tags, local weights) and encode text prompts.

One CLIP load serves the text tower, the dense encoder and the frozen CLIP branch. The loaded model carries a
:class:`ClipIdentity` (name, weights source, activation, weights hash) so checkpoints can refer to it instead of
copying it.

The activation is part of the identity: OpenAI's weights need QuickGELU, and the same tensors in an ``nn.GELU``
model give silently wrong features. :func:`load_clip` picks it from the weights' source (table in README.md,
"Loading CLIP"): an OpenAI tag or TorchScript archive, an ``open_clip_config.json`` beside a hub-style weights
file, a ``-quickgelu`` model name, or ``force_quick_gelu``; where none of these says, it logs the choice it made.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

from ..atomic import atomic_path
from . import tiny_towers  # noqa: F401  (registers the tiny timm towers the tiny model configs name)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TEMPLATES",
    "ClipIdentity",
    "ClipWeightsUnavailableError",
    "clip_identity",
    "clip_normalization",
    "encode_texts",
    "get_tokenizer",
    "load_clip",
    "weights_hash",
]

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
open_clip.add_model_config(MODEL_CONFIG_DIR)

#: The evaluation prompt of the reference ("simple" template set).
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


class ClipWeightsUnavailableError(RuntimeError):
    """Pretrained CLIP weights could not be obtained (usually: no internet access)."""


HUB_CONFIG_NAME = "open_clip_config.json"
HUB_WEIGHT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_model.bin")


@dataclass(frozen=True)
class ClipIdentity:
    """What a checkpoint records about the frozen CLIP it was trained on."""

    model_name: str
    pretrained: str | None
    weights_hash: str
    activation: str | None = None  # "quick_gelu" or "gelu" (None in files written before it was recorded)
    family: str | None = None  # the tower family (tagalign.models.encoders.TOWER_FAMILIES); None in older files
    map_readout: str | None = None  # the dense readout of a MAP-head tower ("value" or "value_mlp"), else None

    def to_dict(self) -> dict:
        return asdict(self)


def activation_of(model: nn.Module) -> str:
    """``"quick_gelu"`` if the model's MLPs use QuickGELU, else ``"gelu"``."""
    quick = any(type(m).__name__ == "QuickGELU" for m in model.modules())
    return "quick_gelu" if quick else "gelu"


def weights_hash(model: nn.Module) -> str:
    """A sha256 prefix over the activation and every tensor of ``model``'s state dict (names, dtypes, shapes, bytes).

    The same tensors under GELU and QuickGELU are different models, so they hash differently.
    """
    digest = hashlib.sha256()
    digest.update(f"activation={activation_of(model)}|".encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()[:16]


def _tower_facts(model: nn.Module) -> dict:
    """The tower family and, for MAP-head towers, the dense readout (None where the tower is not one tagalign reads:
    a ResNet CLIP can still encode text and images)."""
    from .encoders.towers import UnsupportedTowerError, as_tower

    try:
        tower = as_tower(getattr(model, "visual", None))
    except UnsupportedTowerError:
        return {"family": None, "map_readout": None}
    return {"family": tower.family, "map_readout": tower.map_readout}


def clip_identity(model: nn.Module) -> ClipIdentity:
    """The identity attached by :func:`load_clip`, or one computed now for a model built elsewhere."""
    identity = getattr(model, "tagalign_identity", None)
    if identity is None:
        identity = ClipIdentity(model_name=type(model).__name__, pretrained=None, weights_hash=weights_hash(model),
                                activation=activation_of(model), **_tower_facts(model))
        model.tagalign_identity = identity
    return identity


def _register_model_config(name_or_config: str) -> str:
    """Return an open_clip model name, registering a model-config JSON file first if a path is given."""
    path = Path(name_or_config)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"CLIP model config '{path}' does not exist")
        open_clip.add_model_config(path)
        return path.stem
    name = name_or_config.replace("/", "-")
    if open_clip.get_model_config(name) is None:
        raise ValueError(
            f"Unknown CLIP model '{name_or_config}'. Pass an open_clip model name (e.g. ViT-B-16-quickgelu; "
            f"see open_clip.list_models()) or the path to an open_clip model-config JSON file."
        )
    return name


def _is_torchscript_archive(path: str) -> bool:
    """True for OpenAI's released CLIP files, which are TorchScript zip archives."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def tag_uses_quick_gelu(model_name: str, tag: str) -> bool:
    """Whether the open_clip pretrained tag was trained with QuickGELU (all OpenAI weights are)."""
    tag_cfg = open_clip.get_pretrained_cfg(model_name, tag)
    return bool(tag_cfg.get("quick_gelu", False)) or tag.lower() == "openai"


def _hub_files(pretrained: str) -> tuple[str, bool | None]:
    """``(weights file, quick_gelu from open_clip_config.json)`` for a hub-style directory or a file beside one.

    ``quick_gelu`` is None when no ``open_clip_config.json`` is there.
    """
    path = Path(pretrained)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = [folder / name for name in HUB_WEIGHT_NAMES if (folder / name).is_file()]
        if not found:
            raise FileNotFoundError(f"{folder} holds none of the open_clip weight files {list(HUB_WEIGHT_NAMES)}")
        path = found[0]
    config_file = folder / HUB_CONFIG_NAME
    if not config_file.is_file():
        return str(path), None
    try:
        model_cfg = json.loads(config_file.read_text())["model_cfg"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{config_file}: expected open_clip's hub config, a JSON object with 'model_cfg'") from err
    return str(path), bool(model_cfg.get("quick_gelu", False))


def _activation_note(model_name: str, pretrained: str, quick_gelu: bool) -> None:
    """Say which activation a bare weights file got, and how to choose the other one."""
    if quick_gelu:
        return
    logger.warning(
        "CLIP weights %s are a bare state dict: built '%s' with nn.GELU, as its config says. OpenAI CLIP weights "
        "(and hub copies of them) need QuickGELU, or their features are wrong: use the model name '%s-quickgelu' "
        "(--clip %s-quickgelu), load_clip(..., force_quick_gelu=True), or put the hub's %s beside the file.",
        pretrained, model_name, model_name, model_name, HUB_CONFIG_NAME,
    )


def load_clip(
    name_or_config: str,
    pretrained: str | None = None,
    device: str | torch.device = "cpu",
    force_quick_gelu: bool | None = None,
    map_readout: str = "value",
) -> nn.Module:
    """Build an open_clip CLIP model, frozen and in eval mode.

    Args:
        name_or_config: an open_clip model name (``ViT-B-16``) or a path to an open_clip model-config JSON.
        pretrained: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``...), a local weights file
            (an OpenAI TorchScript ``.pt`` archive or an open_clip state dict / ``.safetensors``), or None for
            random initialisation.
            A hub-style directory (``open_clip_config.json`` + ``open_clip_model.safetensors`` or
            ``open_clip_pytorch_model.bin``) works too.
        device: where to put the model.
        force_quick_gelu: override the activation choice. By default OpenAI weights (the ``openai`` tag, any tag
            open_clip marks as QuickGELU, an OpenAI TorchScript archive, or a hub file whose
            ``open_clip_config.json`` says ``quick_gelu``) always get QuickGELU, because open_clip 3.x silently builds
            ``nn.GELU`` for ``ViT-B-16`` + ``openai`` and the features are then wrong. A bare state dict gets what
            the model config says (``ViT-B-16-quickgelu``: QuickGELU), with a warning naming the choice.
        map_readout: for towers with an attention-pool (MAP) head (SigLIP/SigLIP2, PE-Core), how patch tokens are
            read into the text space: ``value`` (the pool's value path and output projection per token,
            TextRegion's readout, the default) or ``value_mlp`` (plus the pool's MLP residual). Ignored elsewhere.

    Returns:
        The model, with a ``tagalign_identity`` attribute (:class:`ClipIdentity`).
    """
    model_name = _register_model_config(name_or_config)
    quick_gelu = force_quick_gelu
    config_quick_gelu = bool((open_clip.get_model_config(model_name) or {}).get("quick_gelu", False))
    if pretrained is not None and os.path.exists(pretrained) and not (
        os.path.isfile(pretrained) and _is_torchscript_archive(pretrained)
    ):
        pretrained_file, hub_quick_gelu = _hub_files(pretrained)
        if quick_gelu is None and hub_quick_gelu is not None:
            quick_gelu = hub_quick_gelu
            logger.info("%s: %s says quick_gelu=%s", pretrained, HUB_CONFIG_NAME, hub_quick_gelu)
        elif quick_gelu is None:
            _activation_note(model_name, pretrained, config_quick_gelu)
    else:
        pretrained_file = pretrained
    if pretrained is not None and os.path.isfile(pretrained) and _is_torchscript_archive(pretrained):
        if force_quick_gelu is False:
            raise ValueError("OpenAI TorchScript weights are always built with QuickGELU")
        logger.info("Loading OpenAI CLIP archive %s (QuickGELU)", pretrained)
        model = open_clip.load_openai_model(pretrained, precision="fp32", device=device)
    else:
        if quick_gelu is None:
            is_tag = pretrained is not None and not os.path.exists(pretrained)
            quick_gelu = tag_uses_quick_gelu(model_name, pretrained) if is_tag else False
        if pretrained is not None and not os.path.exists(pretrained) and not open_clip.get_pretrained_cfg(
            model_name, pretrained
        ):
            raise ClipWeightsUnavailableError(
                f"'{pretrained}' is neither a local file nor a pretrained tag of CLIP model '{model_name}'. "
                f"Known tags: {open_clip.list_pretrained_tags_by_model(model_name)}"
            )
        try:
            model = open_clip.create_model(
                model_name,
                pretrained=pretrained_file,
                device=device,
                precision="fp32",
                force_quick_gelu=bool(quick_gelu),
            )
        except RuntimeError as err:
            if pretrained is None or os.path.exists(pretrained):
                raise
            raise ClipWeightsUnavailableError(
                f"Could not obtain pretrained weights '{pretrained}' for CLIP model '{model_name}': {err}\n"
                f"Without internet access, download the weights file on another machine and pass its path instead "
                f"of the tag, e.g. load_clip('{model_name}', pretrained='/path/to/weights.pt') or "
                f"--clip {model_name} --pretrained /path/to/weights.pt (OpenAI .pt archives, open_clip .bin/.pt "
                f"state dicts and .safetensors all work)."
            ) from err
    if force_quick_gelu is False and config_quick_gelu:
        raise ValueError(f"CLIP model '{model_name}' is a QuickGELU config; force_quick_gelu=False cannot undo that")
    model.eval().requires_grad_(False)
    from .encoders.towers import MAP_READOUTS

    if map_readout not in MAP_READOUTS:
        raise ValueError(f"map_readout must be one of {MAP_READOUTS}, got '{map_readout}'")
    model.visual.tagalign_map_readout = map_readout
    model.tagalign_identity = ClipIdentity(
        model_name=model_name,
        pretrained=None if pretrained is None else str(pretrained),
        weights_hash=weights_hash(model),
        activation=activation_of(model),
        **_tower_facts(model),
    )
    model.tagalign_model_name = model_name
    return model


def clip_normalization(name_or_config: str, pretrained: str | None = None
                       ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pixel ``(mean, std)`` (0-1 scale) the CLIP's weights were trained with, from its configs, never its name:
    the pretrained tag's config in open_clip's registry (OpenAI statistics for OpenAI, LAION, MetaCLIP, DFN and
    EVA02 tags; 0.5/0.5 for SigLIP/SigLIP2 and PE-Core), a hub folder's ``open_clip_config.json``
    ``preprocess_cfg``, else open_clip's default (OpenAI's). Nothing is built or downloaded."""
    from open_clip.transform import PreprocessCfg

    default = PreprocessCfg()
    model_name = _register_model_config(name_or_config)
    found: dict = dict((open_clip.get_model_config(model_name) or {}).get("preprocess_cfg", {}))
    if pretrained is not None and os.path.exists(pretrained):
        folder = Path(pretrained) if Path(pretrained).is_dir() else Path(pretrained).parent
        config_file = folder / HUB_CONFIG_NAME
        if config_file.is_file():
            try:
                found.update(json.loads(config_file.read_text()).get("preprocess_cfg", {}))
            except ValueError as err:
                raise ValueError(f"{config_file}: not valid JSON ({err})") from err
    elif pretrained is not None:
        found.update({k: v for k, v in open_clip.get_pretrained_cfg(model_name, pretrained).items()
                      if k in ("mean", "std")})
    mean, std = found.get("mean", default.mean), found.get("std", default.std)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def get_tokenizer(model: nn.Module):
    """The open_clip tokenizer matching ``model`` (the BPE vocabulary ships with open_clip; no download)."""
    name = getattr(model, "tagalign_model_name", None) or "ViT-B-16"
    return open_clip.get_tokenizer(name, context_length=getattr(model, "context_length", 77))


def _default_cache_dir() -> Path:
    return Path(os.environ.get("TAGALIGN_CACHE", Path.home() / ".cache" / "tagalign")) / "text_embeddings"


@torch.no_grad()
def encode_texts(
    model: nn.Module,
    names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    chunk_size: int = 1024,
    cache_dir: str | os.PathLike | None | bool = None,
    tokenizer=None,
    normalize_each: bool = False,
) -> torch.Tensor:
    """Text embeddings ``[len(names), D]`` as the mean over templates of the *unnormalised* embeddings (TCL and
    TagAlign), or with ``normalize_each`` of the L2-normalised ones (the SCLIP family, MaskCLIP, CLIP Surgery).

    Prompts are ``template.format(name)``, tokenised and encoded in chunks of ``chunk_size`` prompts.
    Results are cached on disk (``$TAGALIGN_CACHE/text_embeddings`` by default, ``cache_dir=False`` disables)
    under a key of (model name, weights hash, templates, names, context length); the cache file is written
    atomically.
    """
    names = list(names)
    templates = list(templates)
    if not names:
        raise ValueError("encode_texts needs at least one name")
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"every template must contain '{{}}'; got {templates}")
    identity = clip_identity(model)
    cache_file = None
    if cache_dir is not False:
        key = json.dumps(
            {
                "model": identity.model_name,
                "weights": identity.weights_hash,
                "templates": templates,
                "names": names,
                "context_length": getattr(model, "context_length", None),
                **({"normalize_each": True} if normalize_each else {}),
            },
            sort_keys=True,
        )
        root = _default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
        cache_file = root / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.pt"
        if cache_file.is_file():
            return torch.load(cache_file, map_location="cpu", weights_only=True)

    tokenizer = tokenizer or get_tokenizer(model)
    device = next(model.parameters()).device
    prompts = [template.format(name) for name in names for template in templates]
    was_training = model.training
    model.eval()
    chunks = []
    for start in range(0, len(prompts), chunk_size):
        tokens = tokenizer(prompts[start : start + chunk_size]).to(device)
        chunks.append(model.encode_text(tokens).float().cpu())
    model.train(was_training)
    embeddings = torch.cat(chunks).view(len(names), len(templates), -1)
    if normalize_each:
        embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
    embeddings = embeddings.mean(dim=1)
    if cache_file is not None:
        with atomic_path(cache_file) as tmp:
            torch.save(embeddings, tmp)
    return embeddings
