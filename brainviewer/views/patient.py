"""Whole-patient inference and the numbers and pictures of one patient.

No Streamlit here. Typical use::

    volume = volume_from_dataset(dataset, "TCGA_CS_4941_19960909")     # or read_nifti / read_dicom_zip
    probs = predict_volume(segmenter, volume, batch_size=16)             # once per model and patient
    pred_masks = predicted_masks(probs, threshold=0.5)                   # on every threshold change
    summary = summarise_patient(volume, pred_masks, probs)
    picture = montage([volume.display_image(i) for i in summary.tumour_slices], ...)
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from brainviewer.data.volumes import Volume
from brainviewer.evaluation.metrics import counts, dice_from_counts
from brainviewer.model.inference import patient_levels, predict_batch
from brainviewer.model.postprocess import postprocess, postprocess_volume
from brainviewer.views.overlay import DEFAULT_DISPLAY_CHANNEL, GT_COLOR, PRED_COLOR, display_rgb, overlay

logger = logging.getLogger(__name__)

#: Called with ``(slices done, slices total)`` during :func:`predict_volume`.
ProgressFn = Callable[[int, int], None]
#: Kinds of volumes whose intensities are scanner units: the model sees them windowed over the
#: whole volume (:meth:`Volume.display_image`), not slice by slice.
SCANNER_KINDS = ("nifti", "dicom")
#: Most slices a montage of a patient's tumour slices shows (see :func:`montage_slices`).
MAX_MONTAGE = 36


def model_inputs(volume: Volume) -> list[np.ndarray]:
    """The scans the model sees for ``volume``.

    Dataset slices go in as they are read (exactly what the evaluation sees, so the per-slice
    Dice here and on the Evaluation page agree). NIfTI and DICOM slices in scanner units are
    windowed over the whole volume to ``uint8`` first, so every slice of a patient is scaled
    the same way (per-slice scaling would brighten the nearly empty end slices).
    """
    if volume.source_kind in SCANNER_KINDS:
        return volume.display_images()
    return list(volume.slices)


def predict_volume(
    segmenter: object, volume: Volume, batch_size: int = 16, progress: ProgressFn | None = None
) -> list[np.ndarray]:
    """Tumour probabilities for every slice of a patient, ``batch_size`` slices per forward pass.

    Args:
        segmenter: a :class:`brainviewer.model.segmenter.Segmenter` (anything with ``predict_probs_batch``).
        volume: the patient.
        batch_size: slices per model call (>= 1).
        progress: called with ``(slices done, slices total)`` after each batch.

    Returns:
        One ``(H, W)`` float32 probability map in ``[0, 1]`` per slice, at the slice's size.

    Raises:
        ValueError: ``batch_size < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    images = model_inputs(volume)
    total = len(images)
    levels = patient_levels(segmenter, images)  # the whole patient's, even though it runs in chunks
    probs: list[np.ndarray] = []
    for start in range(0, total, batch_size):
        chunk = images[start : start + batch_size]
        out = predict_batch(segmenter, chunk, len(chunk), levels)
        probs.extend(np.asarray(p, dtype=np.float32) for p in out)
        if progress is not None:
            progress(len(probs), total)
    return probs


def predicted_masks(
    probs: Sequence[np.ndarray],
    threshold: float = 0.5,
    min_component_px: int = 0,
    keep_largest: bool = False,
    volume_keep_largest: bool = False,
) -> list[np.ndarray]:
    """Threshold and post-process per-slice probabilities: one ``(H, W)`` bool mask per slice."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    return postprocess_volume(
        [np.asarray(p) >= threshold for p in probs], min_component_px, keep_largest, volume_keep_largest
    )


def volume_step_note(
    prob: np.ndarray,
    pred_mask: np.ndarray,
    threshold: float,
    min_component_px: int = 0,
    keep_largest: bool = False,
) -> str | None:
    """Why one slice of a whole-patient prediction has fewer pixels than the same slice predicted alone.

    ``pred_mask`` is the slice's mask after the largest-3-D-component step; ``prob`` its probabilities,
    cut and post-processed slice by slice as the Review page does. ``None`` when the 3-D step removed
    nothing on this slice, else e.g. ``"Predicted: 103 px after keeping the largest 3-D component
    (138 px before)"``.
    """
    after = int(np.count_nonzero(pred_mask))
    before = int(np.count_nonzero(postprocess(np.asarray(prob) >= threshold, min_component_px, keep_largest)))
    if before <= after:
        return None
    return f"Predicted: {after:,} px after keeping the largest 3-D component ({before:,} px before)"


@dataclass
class PatientSummary:
    """Per-slice and whole-patient numbers of one prediction.

    Attributes:
        patient_id: the volume's neutral id.
        n_slices: slices in the volume.
        spacing_mm: ``(row, col, slice)`` mm, or ``None``.
        truth_area_px: per slice, ground-truth tumour pixels (``None`` where the slice has no truth).
        pred_area_px: per slice, predicted tumour pixels.
        slice_dice: per slice, Dice of prediction vs truth (``None`` without truth; 1.0 when both are empty).
        max_prob: per slice, the highest tumour probability (``None`` when probabilities were not given).
        threshold: the probability cut the prediction used (``None`` when unknown).
    """

    patient_id: str
    n_slices: int
    spacing_mm: tuple[float, float, float] | None
    truth_area_px: list[int | None]
    pred_area_px: list[int]
    slice_dice: list[float | None]
    max_prob: list[float | None] = field(default_factory=list)
    threshold: float | None = None
    volume_dice: float | None = None

    @property
    def has_ground_truth(self) -> bool:
        return any(a is not None for a in self.truth_area_px)

    @property
    def gt_tumour_slices(self) -> list[int]:
        """Indices (0-based) of slices whose ground truth has tumour."""
        return [i for i, a in enumerate(self.truth_area_px) if a]

    @property
    def pred_tumour_slices(self) -> list[int]:
        """Indices (0-based) of slices where tumour is predicted."""
        return [i for i, a in enumerate(self.pred_area_px) if a]

    @property
    def tumour_slices(self) -> list[int]:
        """Slices with tumour by ground truth or by prediction, in order."""
        return sorted(set(self.gt_tumour_slices) | set(self.pred_tumour_slices))

    @property
    def gt_voxels(self) -> int | None:
        return sum(a for a in self.truth_area_px if a) if self.has_ground_truth else None

    @property
    def pred_voxels(self) -> int:
        return int(sum(self.pred_area_px))

    @property
    def voxel_mm3(self) -> float | None:
        return None if self.spacing_mm is None else float(np.prod(self.spacing_mm))

    @property
    def gt_volume_mm3(self) -> float | None:
        """Ground-truth tumour volume in mm³ (``None`` without truth or spacing)."""
        voxels, size = self.gt_voxels, self.voxel_mm3
        return None if voxels is None or size is None else voxels * size

    @property
    def pred_volume_mm3(self) -> float | None:
        """Predicted tumour volume in mm³ (``None`` without spacing)."""
        return None if self.voxel_mm3 is None else self.pred_voxels * self.voxel_mm3

    @property
    def tumour_slice_dice(self) -> float | None:
        """Mean Dice over the slices whose ground truth has tumour (``None`` when there are none)."""
        values = [self.slice_dice[i] for i in self.gt_tumour_slices if self.slice_dice[i] is not None]
        return float(np.mean(values)) if values else None

    @property
    def largest_gt_slice(self) -> int | None:
        """Index of the slice with the largest ground-truth tumour, or ``None``."""
        areas = [a or 0 for a in self.truth_area_px]
        return int(np.argmax(areas)) if max(areas, default=0) > 0 else None

    @property
    def largest_pred_slice(self) -> int | None:
        """Index of the slice with the largest predicted tumour, or ``None``."""
        return int(np.argmax(self.pred_area_px)) if max(self.pred_area_px, default=0) > 0 else None

    @property
    def key_slices(self) -> list[int]:
        """The largest ground-truth and largest predicted tumour slices (distinct, in order);
        the middle slice when there is neither."""
        keys = sorted({i for i in (self.largest_gt_slice, self.largest_pred_slice) if i is not None})
        return keys or [self.n_slices // 2]

    def opening_slice(self, requested: int = 0) -> int:
        """The slice (0-based) a newly opened patient shows: ``requested`` (1-based) when it is one of its
        slices, else the largest ground-truth tumour slice (the largest predicted one without truth), else
        the middle one."""
        if 1 <= requested <= self.n_slices:
            return requested - 1
        start = self.largest_gt_slice if self.has_ground_truth else self.largest_pred_slice
        return start if start is not None else self.n_slices // 2

    def slice_rows(self) -> list[dict]:
        """One dict per slice: ``slice`` (1-based), areas, ``dice``, ``max_prob``, tumour flags."""
        rows = []
        for i in range(self.n_slices):
            truth = self.truth_area_px[i]
            rows.append(
                {
                    "slice": i + 1,
                    "truth_area_px": truth,
                    "pred_area_px": self.pred_area_px[i],
                    "dice": self.slice_dice[i],
                    "max_prob": self.max_prob[i] if self.max_prob else None,
                    "truth_tumour": None if truth is None else bool(truth),
                    "pred_tumour": bool(self.pred_area_px[i]),
                }
            )
        return rows

    def as_dict(self) -> dict:
        """The whole-patient numbers (no per-slice lists), JSON-ready."""
        return {
            "patient_id": self.patient_id,
            "n_slices": self.n_slices,
            "threshold": self.threshold,
            "spacing_mm": list(self.spacing_mm) if self.spacing_mm else None,
            "gt_tumour_slices": len(self.gt_tumour_slices) if self.has_ground_truth else None,
            "pred_tumour_slices": len(self.pred_tumour_slices),
            "gt_voxels": self.gt_voxels,
            "pred_voxels": self.pred_voxels,
            "gt_volume_mm3": self.gt_volume_mm3,
            "pred_volume_mm3": self.pred_volume_mm3,
            "volume_dice": self.volume_dice,
            "tumour_slice_dice": self.tumour_slice_dice,
        }

    def to_json(self) -> dict:
        return {**self.as_dict(), "slices": self.slice_rows()}


def summarise_patient(
    volume: Volume,
    pred_masks: Sequence[np.ndarray],
    probs: Sequence[np.ndarray] | None = None,
    threshold: float | None = None,
) -> PatientSummary:
    """Score a patient's predicted masks against its ground truth, slice by slice and as a volume.

    Args:
        volume: the patient (its ``masks`` are the truth; slices without truth are not scored).
        pred_masks: one ``(H, W)`` bool mask per slice.
        probs: the probabilities the masks came from (for ``max_prob``), optional.
        threshold: the cut used, recorded in the summary.

    Returns:
        :class:`PatientSummary`; ``volume_dice`` is one Dice over all slices with truth stacked.
    """
    if len(pred_masks) != volume.n_slices:
        raise ValueError(f"{len(pred_masks)} predicted masks for {volume.n_slices} slices of {volume.patient_id}.")
    truth_area: list[int | None] = []
    slice_dice: list[float | None] = []
    total = None
    for i, pred in enumerate(pred_masks):
        truth = volume.mask(i)
        if truth is None:
            truth_area.append(None)
            slice_dice.append(None)
            continue
        c = counts(pred, truth)
        total = c if total is None else total + c
        truth_area.append(c.tp + c.fn)
        slice_dice.append(dice_from_counts(c))
    return PatientSummary(
        patient_id=volume.patient_id,
        n_slices=volume.n_slices,
        spacing_mm=volume.spacing_mm,
        truth_area_px=truth_area,
        pred_area_px=[int(np.count_nonzero(m)) for m in pred_masks],
        slice_dice=slice_dice,
        max_prob=[float(np.max(p)) for p in probs] if probs is not None else [],
        threshold=threshold,
        volume_dice=None if total is None else dice_from_counts(total),
    )


def outlined(
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray | None,
    alpha: float = 0.25,
    channel: int | None = DEFAULT_DISPLAY_CHANNEL,
) -> np.ndarray:
    """A scan with ground truth (red) and prediction (green) blended and outlined: ``(H, W, 3)`` uint8.

    A 3-channel scan shows ``channel`` in grayscale (FLAIR by default, as the Review page), so the
    red and green outlines stand out; ``None`` shows its channels as RGB.
    """
    picture = display_rgb(image, channel)
    if truth is not None:
        picture = overlay(picture, truth, GT_COLOR, alpha, contour=True, base=picture)
    if pred is not None:
        picture = overlay(picture, pred, PRED_COLOR, alpha, contour=True, base=picture)
    return picture


def _label(picture: np.ndarray, text: str) -> None:
    scale = max(0.35, picture.shape[1] / 400)
    thickness = 1 if scale < 0.8 else 2
    origin = (4, int(16 * scale) + 2)
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(picture, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def montage(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    pred_masks: Sequence[np.ndarray | None] | None = None,
    labels: Sequence[str] | None = None,
    columns: int | None = None,
    tile: int = 160,
    gap: int = 2,
) -> np.ndarray:
    """A grid of slices with ground truth (red) and prediction (green) outlines.

    Args:
        images: scans ``(H, W)`` or ``(H, W, 3)`` (e.g. the tumour slices of a patient).
        masks: ground truth per image (``None`` entries allowed), or ``None``.
        pred_masks: predictions per image, or ``None``.
        labels: a short text drawn in each tile's corner (e.g. the slice number).
        columns: tiles per row (default: about square).
        tile: side of each tile in pixels (slices are letterboxed into it).
        gap: pixels between tiles (white).

    Returns:
        ``(rows * (tile + gap) - gap, columns * (tile + gap) - gap, 3)`` uint8 RGB.

    Raises:
        ValueError: no images, or lists of different lengths.
    """
    n = len(images)
    if n == 0:
        raise ValueError("montage needs at least one image (a patient without tumour slices has nothing to show).")
    for name, values in (("masks", masks), ("pred_masks", pred_masks), ("labels", labels)):
        if values is not None and len(values) != n:
            raise ValueError(f"{len(values)} {name} for {n} images.")
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (tile + gap) - gap, columns * (tile + gap) - gap, 3), 255, dtype=np.uint8)
    for k, image in enumerate(images):
        picture = outlined(image, masks[k] if masks else None, pred_masks[k] if pred_masks else None)
        picture = _fit(picture, tile)
        if labels:
            _label(picture, str(labels[k]))
        r, c = divmod(k, columns)
        canvas[r * (tile + gap) : r * (tile + gap) + tile, c * (tile + gap) : c * (tile + gap) + tile] = picture
    return canvas


def montage_slices(slices: Sequence[int], most: int = MAX_MONTAGE) -> list[int]:
    """``slices`` when there are at most ``most``, else ``most`` of them spread evenly (first and last kept)."""
    if len(slices) <= most:
        return list(slices)
    return [slices[int(i)] for i in np.linspace(0, len(slices) - 1, most)]


def _fit(picture: np.ndarray, side: int) -> np.ndarray:
    """Letterbox an RGB picture into a black ``side x side`` square, keeping its aspect ratio."""
    height, width = picture.shape[:2]
    scale = side / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    resized = cv2.resize(picture, (new_w, new_h), interpolation=interpolation)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - new_h) // 2, (side - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def tumour_gif(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    pred_masks: Sequence[np.ndarray | None] | None = None,
    labels: Sequence[str] | None = None,
    size: int = 256,
    frame_ms: int = 200,
) -> bytes:
    """An animated GIF (looping) of slices with ground truth (red) and prediction (green) outlines.

    Args:
        images, masks, pred_masks, labels: as in :func:`montage`.
        size: side of each frame in pixels.
        frame_ms: display time of each frame.

    Returns:
        GIF bytes.
    """
    if not images:
        raise ValueError("an animation needs at least one image.")
    frames = []
    for k, image in enumerate(images):
        picture = _fit(outlined(image, masks[k] if masks else None, pred_masks[k] if pred_masks else None), size)
        if labels:
            _label(picture, str(labels[k]))
        frames.append(Image.fromarray(picture))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return buffer.getvalue()
