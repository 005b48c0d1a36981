"""Predicted masks for files and folders (``python -m brainviewer predict``).

For every scan a ``<name>_pred.png`` is written: ``uint8`` ``{0, 255}``, at the scan's own
size, after the model's threshold and post-processing (:meth:`Segmenter.mask_from_probs`).

* A file input ``scan.tif`` gives ``out_dir/scan_pred.png``.
* A folder input is searched recursively; ``folder/a/b/scan.png`` gives
  ``out_dir/a/b/scan_pred.png``. Ground-truth ``*_mask`` files, hidden files, files of
  unsupported types and anything inside ``out_dir`` are skipped.
* With ``volume=True`` the scans of each folder are one patient's slices (the ``kaggle_3m``
  layout), stacked in natural name order, and only the largest 3-D connected component of
  the stack is kept, as :func:`brainviewer.evaluation.evaluate.evaluate_probs` does for weights that ask for
  it. Do not use it on a folder of unrelated slices.
* Without ``volume``, each scan is a slice seen alone: weights with a tumour-present gate
  (:mod:`brainviewer.model.gate`) write an empty mask for a slice the gate calls tumour-free.

Existing outputs are never replaced unless ``overwrite=True``, and two inputs that would
write the same output are refused. Unreadable scans are reported, not fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainviewer.data.io import ScanReadError, is_mask_name, is_supported, natural_key, read_image
from brainviewer.files import write_atomic, write_new
from brainviewer.model.inference import patient_levels, predict_slices
from brainviewer.model.postprocess import keep_largest_volume_component
from brainviewer.model.segmenter import Segmenter
from brainviewer.views.overlay import mask_to_png_bytes

logger = logging.getLogger(__name__)

PRED_SUFFIX = "_pred.png"

Failure = tuple[Path, str]


@dataclass(frozen=True)
class PredictionJob:
    """One scan to segment and where its mask goes."""

    source: Path
    output: Path


def output_name(relative: Path) -> Path:
    """``a/b/scan.tif`` -> ``a/b/scan_pred.png`` (the path without its extension, plus ``_pred.png``)."""
    return relative.with_name(relative.stem + PRED_SUFFIX)


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _folder_scans(folder: Path, out_dir: Path) -> list[Path]:
    """Scans under ``folder`` (recursively, natural order), without masks, hidden files or ``out_dir``."""
    scans = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if not is_supported(path.name) or is_mask_name(path.name) or _is_within(path, out_dir):
            continue
        scans.append(path)
    return sorted(scans, key=lambda p: natural_key(p.relative_to(folder).as_posix()))


def plan_jobs(
    inputs: Sequence[str | Path], out_dir: Path, overwrite: bool = False
) -> tuple[list[PredictionJob], list[Failure]]:
    """Work out every ``(scan, output)`` pair without reading any scan.

    Returns:
        ``(jobs, failed)``: jobs in input order; failed ``(path, reason)`` for inputs that do
        not exist, unsupported or mask files named explicitly, and outputs that exist
        (unless ``overwrite``) or that two inputs would share.
    """
    out_dir = Path(out_dir)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    jobs: list[PredictionJob] = []
    failed: list[Failure] = []
    claimed: dict[Path, Path] = {}

    def add(source: Path, output: Path) -> None:
        key = output.resolve()
        if key in claimed:
            failed.append(
                (
                    source,
                    f"{claimed[key]} already writes {output}; rename one of them or predict them "
                    "into separate --out folders",
                )
            )
        elif output.exists() and not overwrite:
            failed.append((source, f"{output} already exists; pass --overwrite to replace it or choose another --out"))
        else:
            claimed[key] = source
            jobs.append(PredictionJob(source, output))

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            scans = _folder_scans(path, out_dir)
            if not scans:
                failed.append((path, "the folder holds no scans (supported: .png, .tif, .jpg, .webp, .bmp, .npy)"))
            for scan in scans:
                add(scan, out_dir / output_name(scan.relative_to(path)))
        elif not path.exists():
            failed.append((path, "no such file or folder"))
        elif is_mask_name(path.name):
            failed.append((path, "this is a ground-truth *_mask file, not a scan; give the scan instead"))
        elif not is_supported(path.name):
            failed.append(
                (path, f"'{path.suffix or '(no suffix)'}' files are not supported; export the slice as PNG or TIFF")
            )
        else:
            add(path, out_dir / output_name(Path(path.name)))
    return jobs, failed


def write_mask_png(mask: np.ndarray, path: Path, overwrite: bool = False) -> Path:
    """Write a ``(H, W)`` bool mask as an 8-bit PNG of 0 and 255, atomically.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked again at write
        time, in case another process made it meanwhile).
    """
    png = mask_to_png_bytes(mask)
    if overwrite:
        write_atomic(path, png)
    else:
        write_new(path, png)
    return path


def _batches(jobs: list[PredictionJob], size: int) -> Iterable[list[PredictionJob]]:
    for start in range(0, len(jobs), size):
        yield jobs[start : start + size]


def _by_folder(jobs: list[PredictionJob]) -> list[list[PredictionJob]]:
    """Jobs grouped by the folder their scan is in, in order of first appearance."""
    groups: dict[Path, list[PredictionJob]] = {}
    for job in jobs:
        groups.setdefault(job.source.parent, []).append(job)
    return list(groups.values())


def predict_paths(
    segmenter: Segmenter,
    inputs: Sequence[str | Path],
    out_dir: Path,
    threshold: float | None = None,
    overwrite: bool = False,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
    volume: bool = False,
) -> tuple[list[Path], list[Failure]]:
    """Write predicted masks for scan files and folders.

    Args:
        segmenter: the model.
        inputs: scan files and/or folders (searched recursively).
        out_dir: where the ``*_pred.png`` files go (created if needed).
        threshold: probability cut; ``None`` uses the model's own.
        overwrite: replace existing prediction files.
        batch_size: scans per forward pass.
        progress: called with ``(scans done, scans total)``.
        volume: treat the scans of each folder as one patient volume and keep only the
            largest 3-D component of its predicted masks (slices of different sizes are left
            as they are, with a warning).

    Returns:
        ``(written, failed)``: the output paths written, and ``(input path, reason)`` for
        every input that was not predicted.
    """
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    out_dir = Path(out_dir)
    jobs, failed = plan_jobs(inputs, out_dir, overwrite)
    if segmenter.prep.volume_keep_largest and not volume and jobs:
        logger.info(
            "these weights were validated keeping the largest 3-D component per patient; "
            "pass volume=True (--volume) when each folder holds one patient's slices"
        )
    written: list[Path] = []
    done = gated = 0
    # With volume, a whole folder at a time: a patient's masks must all be known before the 3-D step.
    for group in _by_folder(jobs) if volume else list(_batches(jobs, max(1, batch_size))):
        loaded: list[tuple[PredictionJob, np.ndarray]] = []
        for job in group:
            try:
                loaded.append((job, read_image(job.source)))
            except (ScanReadError, OSError) as err:
                failed.append((job.source, str(err)))
        # a patient's slices share their intensity levels where the weights normalise per volume
        levels = patient_levels(segmenter, [image for _, image in loaded]) if volume else None
        masks: list[tuple[PredictionJob, np.ndarray]] = []
        for start in range(0, len(loaded), max(1, batch_size)):
            for job, probs, presence in _infer(
                segmenter, loaded[start : start + max(1, batch_size)], batch_size, failed, levels
            ):
                # a slice alone goes through the weights' tumour-present gate; a volume has its 3-D step instead
                presence = None if volume else presence
                gated += presence is not None and not segmenter.tumour_shown(presence)
                masks.append((job, _mask(segmenter, probs, threshold, presence)))
        if volume:
            kept = keep_largest_volume_component([mask for _, mask in masks])
            masks = [(job, mask) for (job, _), mask in zip(masks, kept, strict=True)]
        written.extend(_write_masks(masks, overwrite, failed))
        done += len(group)
        if progress:
            progress(done, len(jobs))
    logger.info("wrote %d masks to %s; %d inputs failed", len(written), out_dir, len(failed))
    if gated:
        logger.info("%d slices called tumour-free by the weights' tumour-present gate: their masks are empty", gated)
    return written, failed


def _write_masks(masks: list[tuple[PredictionJob, np.ndarray]], overwrite: bool, failed: list[Failure]) -> list[Path]:
    """Write each job's mask; a file that cannot be written is recorded in ``failed``."""
    written = []
    for job, mask in masks:
        try:
            write_mask_png(mask, job.output, overwrite)
        except FileExistsError:
            failed.append((job.source, f"{job.output} appeared while predicting; not replaced"))
            continue
        except OSError as err:
            failed.append((job.source, f"could not write {job.output}: {err}"))
            continue
        written.append(job.output)
    return written


def _mask(segmenter: Segmenter, probs: np.ndarray, threshold: float | None, presence: float | None) -> np.ndarray:
    """The slice's mask; ``presence`` (its tumour-present probability) is passed only when there is one, so
    stand-in segmenters without a gate keep working."""
    if presence is None:
        return segmenter.mask_from_probs(probs, threshold)
    return segmenter.mask_from_probs(probs, threshold, presence)


def _infer(
    segmenter: Segmenter,
    loaded: list[tuple[PredictionJob, np.ndarray]],
    batch_size: int,
    failed: list[Failure],
    levels: np.ndarray | None = None,
) -> list[tuple[PredictionJob, np.ndarray, float | None]]:
    """Probabilities and tumour-present probability for a batch; if the batch fails, scan by scan so one bad
    scan costs only itself. ``levels``: the patient's intensity levels (``--volume``), else each scan is
    normalised alone."""
    if not loaded:
        return []
    try:
        probs, presence = predict_slices(segmenter, [image for _, image in loaded], batch_size, levels)
        return [(job, p, g) for (job, _), p, g in zip(loaded, probs, presence, strict=True)]
    except (ValueError, RuntimeError) as err:
        if len(loaded) == 1:
            failed.append((loaded[0][0].source, f"the model could not process it: {err}"))
            return []
        logger.warning("batch inference failed (%s); retrying scan by scan", err)
    results = []
    for item in loaded:
        results.extend(_infer(segmenter, [item], 1, failed, levels))
    return results
