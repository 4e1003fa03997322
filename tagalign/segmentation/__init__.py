"""Zero-shot semantic segmentation: slide inference, the mmseg segmentor, extra datasets, metric, benchmarks.

Importing any tagalign module runs tagalign/__init__.py first, which installs the mmcv._ext stub before mmseg.
"""

from .inference import InferenceConfig, predict_probabilities, window_grid

__all__ = ["InferenceConfig", "predict_probabilities", "window_grid"]
