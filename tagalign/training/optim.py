"""Optimizer parameter groups as the reference builds them (spec §5.2).

Parameters with ``ndim == 1`` or a name ending in ``.bias`` get no weight decay; everything else does, *including*
the 0-dim gates and temperatures (reference behaviour; ``paramwise_cfg=dict(decay_scalars=False)`` excludes them).
Frozen parameters are left out.
"""

from __future__ import annotations

from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

__all__ = ["TagAlignOptimWrapperConstructor"]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class TagAlignOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.decay_scalars = paramwise_cfg.pop("decay_scalars", True)
        if paramwise_cfg:
            raise ValueError(f"unsupported paramwise_cfg keys {sorted(paramwise_cfg)} (only decay_scalars)")
        super().__init__(optim_wrapper_cfg, None)
        self.paramwise_cfg = {"decay_scalars": self.decay_scalars}  # non-empty: mmengine then calls add_params

    def add_params(self, params: list[dict], module, prefix: str = "", is_dcn_module=None) -> None:
        decay, no_decay = [], []
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim == 1 or name.endswith(".bias") or (param.ndim == 0 and not self.decay_scalars):
                no_decay.append(param)
            else:
                decay.append(param)
        params.append({"params": decay})
        params.append({"params": no_decay, "weight_decay": 0.0})
