"""Inference over a whole patient, for any segmenter (PyTorch, ONNX or a test stand-in); NumPy only."""

from __future__ import annotations

import numpy as np

from brainviewer.model.preprocessing import volume_levels


def predict_batch(
    segmenter: object, images: list[np.ndarray], batch_size: int, levels: np.ndarray | None = None
) -> list[np.ndarray]:
    """``segmenter.predict_probs_batch(images, batch_size[, levels])``: ``levels`` is passed only when a
    patient's levels are in use, so stand-ins without that parameter keep working."""
    if levels is None:
        return segmenter.predict_probs_batch(images, batch_size)  # type: ignore[attr-defined]
    return segmenter.predict_probs_batch(images, batch_size, levels)  # type: ignore[attr-defined]


def predict_slices(
    segmenter: object, images: list[np.ndarray], batch_size: int, levels: np.ndarray | None = None
) -> tuple[list[np.ndarray], list[float | None]]:
    """``(probs, tumour-present probabilities)`` as ``segmenter.predict_slices`` gives them; a segmenter without
    that method (a stand-in) gives ``None`` for each scan's tumour-present probability (no gate)."""
    if not hasattr(segmenter, "predict_slices"):
        probs = predict_batch(segmenter, images, batch_size, levels)
        return probs, [None] * len(probs)
    if levels is None:
        return segmenter.predict_slices(images, batch_size)
    return segmenter.predict_slices(images, batch_size, levels)


def patient_levels(segmenter: object, slices: list[np.ndarray]) -> np.ndarray | None:
    """The patient's intensity levels when ``segmenter``'s weights normalise per volume, else ``None``."""
    prep = getattr(segmenter, "prep", None)
    return volume_levels(slices, prep) if prep is not None else None


def predict_volume_probs(segmenter: object, slices: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
    """Probabilities for the slices of one patient, normalised together where the weights ask for it
    (``intensity_norm: volume_percentile``), else each on its own.

    Args:
        segmenter: a :class:`~brainviewer.model.segmenter.Segmenter`, an ONNX one, or anything with
            ``predict_probs_batch(images, batch_size[, levels])`` (and ``prep``, when it normalises per volume).
        slices: the patient's scans, each ``(H, W)`` or ``(H, W, 3)``.
        batch_size: scans per forward pass.

    Returns:
        ``(H, W)`` float32 probabilities for each slice, as ``predict_probs_batch`` gives them.
    """
    return predict_batch(segmenter, slices, batch_size, patient_levels(segmenter, slices))
