"""The two evaluation protocols and the methods' own settings, per dataset (training-free spec §10.3).

``tagalign`` is the TCL/TagAlign family: ImageNet pixel statistics, short side 448, slide 448/224, per-window
``sigmoid(10·cos − 2.5)``, a constant background channel, the prompt "a photo of a {}.", the dataset's class names.
``sclip`` is the SCLIP family: the CLIP's own pixel statistics (``norm="model"``: OpenAI's for OpenAI, LAION,
MetaCLIP, DFN and EVA02 weights, 0.5/0.5 for SigLIP and PE-Core, read from the weights' config), short side 336
(COCO-Stuff 448, Cityscapes 560), slide 224/112, window-averaged cosines resized to the original image,
``softmax(τ·cos)`` over all queries, max over synonyms,
``prob_thd`` (and ``area_thd`` on VOC), 80 templates normalised one by one, SCLIP's synonym files, fp16 on CUDA.

A preset is one method's own settings on top of its family: ``naclip`` (whole-image VOC/VOC20, τ 40, PAMR on),
``clearclip`` (short side 448, slide 448/224 padded to 16, τ 50, plain names), ``sclip`` (the family itself),
``proxyclip`` (slide 336/112 padded to 56, τ 40, ProxyCLIP's names; ADE20K and Cityscapes short side 448),
``sc_clip`` (SCLIP's windows; τ 50 and area_thd 0.1 on VOC, τ 55 on COCO-Object), ``resclip`` (SCLIP's windows,
whole-image VOC/VOC20, and per dataset the encoder options ``temp_thd``, ``tau_rcs``/``lambda_rcs``,
``tau_sfr``/``lambda_sfr``: a preset may carry ``encoder_options`` for its own encoder, under the user's),
``cass`` (SCLIP's windows, whole-image VOC, DINO ViT-B/8, its object-level text adjustment with per-dataset g_w, α
and cluster cut, singular values not stretched on VOC20 and Cityscapes),
``trident`` (ProxyCLIP with DINO ViT-B/16 on 336/224 windows spliced into one map, SAM's last attention over the
whole image; per-dataset short side and ``cos_fac``; a preset may name its encoder's second model, ``vfm``),
``lposs``/``lposs_plus`` (MaskCLIP with residual and FFN, short side 448, slide 224/112, no ``prob_thd``, label
propagation over the windows, and for LPOSS+ over the pixels; their CLIP is OpenCLIP's ``laion2b_s34b_b88k``, chosen
with ``--pretrained``).
Datasets outside the table (ImageNet-S, the quickstart's shapes) keep their own image size; with background their
``prob_thd`` is 0.1, as on Context60.
"""

from __future__ import annotations

from copy import deepcopy

__all__ = ["PRESETS", "PROTOCOLS", "merge_settings", "protocol_settings"]

PROTOCOLS = ("tagalign", "sclip")

_SCLIP_BASE = dict(
    norm="model", short_side=336, templates="openai80", normalize_each_template=True, class_names="sclip",
    inference=dict(protocol="sclip", mode="slide", crop=224, stride=112, logit_scale=40.0, prob_thd=0.0,
                   area_thd=None, pad_to=0, mix="similarities", pamr=False, precision="fp16"),
)
_TAGALIGN_BASE = dict(norm="imagenet", short_side=None, templates="simple", normalize_each_template=False,
                      class_names="dataset", inference=dict())


def _cass_text(global_weight: float, alpha: float, threshold: float) -> dict:
    return dict(cass_global_weight=global_weight, cass_alpha=alpha, cass_cluster_threshold=threshold)


# per-dataset values over the family's base (spec §10.3); "inference" entries are InferenceConfig fields
_TABLE: dict[str, dict[str, dict]] = {
    "tagalign": {},
    "sclip": {
        "voc": dict(inference=dict(logit_scale=65.0, prob_thd=0.1, area_thd=0.1)),
        "context": dict(inference=dict(logit_scale=50.0, prob_thd=0.1)),
        "coco_object": dict(inference=dict(logit_scale=50.0, prob_thd=0.1)),
        "coco_stuff": dict(short_side=448),
        "cityscapes": dict(short_side=560),
    },
    "naclip": {
        "*": dict(inference=dict(pamr=True, pamr_iter=10, pamr_dilations=(8, 16))),
        "voc": dict(inference=dict(mode="whole", prob_thd=0.1)),
        "voc20": dict(inference=dict(mode="whole")),
        "context": dict(inference=dict(prob_thd=0.1)),
        "coco_object": dict(inference=dict(prob_thd=0.1)),
        "cityscapes": dict(short_side=560),
    },
    "clearclip": {
        "*": dict(short_side=448, class_names="plain",
                  inference=dict(crop=448, stride=224, pad_to=16, logit_scale=50.0)),
        "voc": dict(inference=dict(prob_thd=0.5)),
        "context": dict(inference=dict(prob_thd=0.15)),
        "coco_object": dict(inference=dict(prob_thd=0.4)),
        "cityscapes": dict(inference=dict(crop=224, stride=224)),
    },
    "sc_clip": {  # SC-CLIP's configs/cfg_*.py (spec-2 §10); its name files are SCLIP's
        "voc": dict(inference=dict(logit_scale=50.0, prob_thd=0.15, area_thd=0.1)),
        "context": dict(inference=dict(prob_thd=0.15)),
        "coco_object": dict(inference=dict(logit_scale=55.0, prob_thd=0.35)),
        "cityscapes": dict(short_side=560),
    },
    "resclip": {  # ResCLIP's configs/cfg_*.py (spec-2 §10): SCLIP's windows and names; temp_thd, (τ, λ) of RCS, SFR
        "*": dict(encoder_options=dict(base="naclip", tau_rcs=2.0, tau_sfr=1.8, lambda_sfr=0.7)),
        "voc": dict(inference=dict(mode="whole", prob_thd=0.1),
                    encoder_options=dict(temp_thd=0.5, lambda_rcs=0.3, tau_sfr=2.2)),
        "context": dict(inference=dict(prob_thd=0.1), encoder_options=dict(temp_thd=0.3, lambda_rcs=0.3)),
        "coco_object": dict(inference=dict(prob_thd=0.1), encoder_options=dict(temp_thd=0.11, lambda_rcs=0.4)),
        "voc20": dict(inference=dict(mode="whole"),
                      encoder_options=dict(temp_thd=0.1, lambda_rcs=0.6, tau_sfr=2.1, lambda_sfr=0.6)),
        "context59": dict(encoder_options=dict(temp_thd=0.25, lambda_rcs=0.4)),
        "coco_stuff": dict(encoder_options=dict(temp_thd=0.11, lambda_rcs=0.4)),
        "cityscapes": dict(short_side=560, encoder_options=dict(temp_thd=0.1, lambda_rcs=0.2, tau_sfr=2.1,
                                                                lambda_sfr=0.6)),
        "ade20k": dict(encoder_options=dict(temp_thd=0.25, lambda_rcs=0.3, tau_sfr=2.1)),
    },
    "cass": {  # CASS's configs/cfg_*.py (spec-2 §10): SCLIP's windows and names, whole-image VOC; its text
        # adjustment's (g_w, α, cluster cut) per dataset; no singular-value stretch on VOC20 and Cityscapes
        "*": dict(inference=dict(cass_adjust=True)),
        "voc": dict(inference=dict(mode="whole", prob_thd=0.1, **_cass_text(0.10, 0.03, 0.10))),
        "context": dict(inference=dict(prob_thd=0.1, **_cass_text(0.25, 0.04, 0.09))),
        "coco_object": dict(inference=dict(prob_thd=0.1, **_cass_text(0.25, 0.01, 0.10))),
        "voc20": dict(inference=_cass_text(0.40, 0.02, 0.10), encoder_options=dict(stretch=False)),
        "context59": dict(inference=_cass_text(0.25, 0.04, 0.09)),
        "coco_stuff": dict(inference=_cass_text(0.20, 0.02, 0.02)),
        "cityscapes": dict(short_side=560, inference=dict(cass_crop_cls=True, **_cass_text(0.10, 0.03, 0.14)),
                           encoder_options=dict(stretch=False)),
        "ade20k": dict(inference=_cass_text(0.30, 0.05, 0.06)),
    },
    "trident": {  # Trident's configs (spec-2 §5, §10): ProxyCLIP with DINO ViT-B/16 on 336 windows, SAM over the image
        "*": dict(class_names="proxyclip", vfm="dino_vitb16", encoder_options=dict(batch_mean=True),
                  inference=dict(trident=True, crop=336, stride=224, logit_scale=40.0)),
        "voc": dict(short_side=448, inference=dict(prob_thd=0.2)),
        "context": dict(short_side=576, inference=dict(prob_thd=0.15)),
        "coco_object": dict(short_side=448, inference=dict(prob_thd=0.25)),
        "voc20": dict(inference=dict(stride=112, trident_cos_fac=0.0)),
        "context59": dict(short_side=576),
        "coco_stuff": dict(short_side=448),
        "cityscapes": dict(short_side=688, inference=dict(trident_cos_fac=3.0, trident_refine_neg_cos=False)),
        "ade20k": dict(short_side=576, inference=dict(trident_refine_neg_cos=False)),
        "pc459": dict(short_side=448),
        "ade847": dict(short_side=448),
    },
    "lposs": {  # LPOSS's configs/lposs.yaml and datasets/*.py (spec-2 §6): 448, slide 224/112, no prob_thd
        "*": dict(short_side=448, inference=dict(lposs=True)),
    },
    "lposs_plus": {  # LPOSS+ (configs/lposs_plus.yaml): the same, then the pixel-level propagation
        "*": dict(short_side=448, inference=dict(lposs=True, lposs_plus=True)),
    },
    "proxyclip": {  # ProxyCLIP's configs/cfg_*.py (spec-1 §10.3): windows zero-padded to a multiple of 56
        "*": dict(class_names="proxyclip", inference=dict(crop=336, stride=112, pad_to=56, logit_scale=40.0)),
        "voc": dict(inference=dict(prob_thd=0.2)),
        "context": dict(inference=dict(prob_thd=0.15)),
        "coco_object": dict(inference=dict(prob_thd=0.25)),
        "cityscapes": dict(short_side=448, inference=dict(crop=224, stride=112)),
        "ade20k": dict(short_side=448),
    },
}
#: preset -> (protocol family, the encoder it runs by default)
PRESETS = {"tagalign": ("tagalign", "surgery"), "sclip": ("sclip", "sclip"), "naclip": ("sclip", "naclip"),
           "clearclip": ("sclip", "clearclip"), "proxyclip": ("sclip", "proxyclip"), "sc_clip": ("sclip", "sc_clip"),
           "resclip": ("sclip", "resclip"), "lposs": ("sclip", "maskclip"), "lposs_plus": ("sclip", "maskclip"),
           "cass": ("sclip", "cass"), "trident": ("sclip", "proxyclip")}
_TABLED_DATASETS = ("voc", "context", "coco_object", "voc20", "context59", "coco_stuff", "cityscapes", "ade20k")


def merge_settings(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, nested dicts merged key by key."""
    merged = deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def protocol_settings(key: str, protocol: str = "tagalign", preset: str | None = None,
                      with_background: bool = False) -> dict:
    """``{norm, short_side, templates, normalize_each_template, class_names, inference}`` for dataset ``key``
    (``short_side`` None: the dataset's own; ``inference``: :class:`.inference.InferenceConfig` fields), and
    ``encoder_options`` where the preset sets its encoder's options."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol '{protocol}'; choose from {PROTOCOLS}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}'; choose from {sorted(PRESETS)}")
    if preset is not None and PRESETS[preset][0] != protocol:
        raise ValueError(f"preset '{preset}' belongs to the '{PRESETS[preset][0]}' protocol, not '{protocol}'")
    settings = deepcopy(_SCLIP_BASE if protocol == "sclip" else _TAGALIGN_BASE)
    if protocol == "sclip" and key not in _TABLED_DATASETS:
        settings["short_side"] = None
        if with_background:
            settings["inference"]["prob_thd"] = 0.1
    table = _TABLE[preset or protocol]  # a preset's table replaces its family's
    settings = merge_settings(settings, table.get("*", {}))
    return merge_settings(settings, table.get(key, {}))
