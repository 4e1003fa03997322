"""Make mmsegmentation 1.x importable on pure-Python ``mmcv-lite``.

mmseg imports ``mmcv.ops`` at module level in a few places, and ``mmcv.ops`` needs the compiled extension
``mmcv._ext``. tagalign uses no compiled op (slide inference and PAMR are plain torch), so when the real
extension cannot be imported we register a stand-in whose every attribute is a function raising
``NotImplementedError``. When full mmcv is installed this module does nothing.

Import this module before anything from ``mmseg``; ``import tagalign`` does it for you.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

__all__ = ["MMCV_OPS_STUBBED", "install_mmcv_ext_stub"]


class _MissingCompiledOps(types.ModuleType):
    """A module whose attributes are functions that explain the compiled op is unavailable."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def _missing(*args, **kwargs):
            raise NotImplementedError(
                f"mmcv op '{name}' needs mmcv compiled with ops; tagalign runs on mmcv-lite and never calls it"
            )

        return _missing


def install_mmcv_ext_stub() -> bool:
    """Register the ``mmcv._ext`` stand-in if mmcv is installed without compiled ops; return True if installed."""
    if "mmcv._ext" in sys.modules:
        return isinstance(sys.modules["mmcv._ext"], _MissingCompiledOps)
    spec = importlib.util.find_spec("mmcv")  # does not import mmcv (slow: cv2, mmengine)
    if spec is None:
        return False
    locations = spec.submodule_search_locations or []
    if any(next(Path(location).glob("_ext*"), None) for location in locations):
        return False  # mmcv with compiled ops: nothing to do
    stub = _MissingCompiledOps("mmcv._ext")
    # mmengine's mmcv_full_available() calls pkgutil.find_loader, which needs a __spec__; a None loader makes it
    # report "no full mmcv", which is the truth.
    stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
    sys.modules["mmcv._ext"] = stub
    return True


MMCV_OPS_STUBBED: bool = install_mmcv_ext_stub()
