"""PNG mask exports: predicted masks as 8-bit PNG files, under safe relative names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from brainviewer.files import write_new
from brainviewer.views.overlay import mask_to_png_bytes


def write_png_masks(masks: Sequence[np.ndarray], names: Sequence[str], folder: str | Path) -> list[Path]:
    """Write masks as 8-bit PNGs (0 / 255) named ``<folder>/<name>.png``.

    Args:
        masks: ``(H, W)`` bool masks.
        names: one relative name per mask, without suffix; may contain ``/`` sub-folders.
        folder: output folder (created).

    Returns:
        The written paths.

    Raises:
        FileExistsError: any target exists (checked before anything is written).
        ValueError: names that are absolute, climb out with ``..``, repeat, or do not match the masks.
    """
    folder = Path(folder)
    if len(masks) != len(names):
        raise ValueError(f"{len(masks)} masks but {len(names)} names.")
    targets = [folder / (safe_relative_name(n) + ".png") for n in names]
    if len(set(targets)) != len(targets):
        raise ValueError("mask names repeat; give each mask its own name.")
    clash = [str(t) for t in targets if t.exists()]
    if clash:
        raise FileExistsError(f"{len(clash)} file(s) already exist, e.g. {clash[0]}; choose an empty folder.")
    for mask, target in zip(masks, targets, strict=True):
        write_new(target, mask_to_png_bytes(mask))
    return targets


def safe_relative_name(name: str) -> str:
    """``name`` as a safe relative POSIX path (no absolute paths, no ``..``); raises ValueError otherwise."""
    path = PurePosixPath(str(name).replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(f"{name!r} is not a safe relative file name.")
    return str(path)
