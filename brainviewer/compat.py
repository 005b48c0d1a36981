"""Import shims for the CPU-only PyTorch stack.

PyPI's ``torchvision`` wheel is built against CUDA torch. With the CPU build of
``torch`` its import fails with ``RuntimeError: operator torchvision::nms does not
exist`` because the compiled ops library cannot register its kernels. ``timm`` (and so
``segmentation_models_pytorch``) imports torchvision at import time but only uses its
pure-Python parts. :func:`ensure_torchvision` declares the missing operator schemas,
only when the plain import fails, so that the import succeeds.

Everything in brainviewer that needs smp imports it through :func:`import_smp`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

logger = logging.getLogger(__name__)

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_fragment = None  # keep the library fragment alive for the process lifetime


def _purge_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision() -> ModuleType:
    """Import torchvision, declaring missing C++ op schemas if the import fails.

    Returns:
        The imported ``torchvision`` module.

    Raises:
        RuntimeError: if torchvision still cannot be imported after the shim.
    """
    global _fragment
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        logger.debug("torchvision import failed (%s); declaring op schemas", err)
    _purge_torchvision()
    import torch

    if _fragment is None:
        _fragment = torch.library.Library("torchvision", "FRAGMENT")
        for name, schema in _SCHEMAS.items():
            try:
                _fragment.define(schema)
            except RuntimeError:  # already defined by a partial import
                logger.debug("schema torchvision::%s already present", name)
    return importlib.import_module("torchvision")


def import_smp() -> ModuleType:
    """Import ``segmentation_models_pytorch`` after :func:`ensure_torchvision`."""
    ensure_torchvision()
    return importlib.import_module("segmentation_models_pytorch")
