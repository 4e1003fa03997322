"""Second vision models (VFMs: DINO, DINOv2, SAM, DINOv3) that VFM-guided dense encoders read beside CLIP."""

from .catalog import VFM_CATALOG, VfmSpec
from .second_model import SecondModel, VfmWeightsUnavailableError, load_vfm, vfm_for

__all__ = ["VFM_CATALOG", "SecondModel", "VfmSpec", "VfmWeightsUnavailableError", "load_vfm", "vfm_for"]
