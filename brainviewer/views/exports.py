"""Exports of a patient's prediction: masks ZIP, metrics CSV and a one-page HTML report.

Everything is built in memory and returned as ``bytes`` / ``str`` (for download buttons); :func:`save_new`
writes such bytes to a file that does not exist yet. Nothing is ever overwritten. No Streamlit here.

Masks ZIP layout
----------------
The ZIP follows the dataset's own layout and mask naming, with paths relative to the dataset
folder, so unpacking it into a copy of the dataset's images (or, with ``include_images``,
anywhere) gives a dataset that :func:`brainviewer.data.datasets.open_dataset` reads again, with the
predictions as its masks:

* ``kaggle_3m``: ``<patient folder>/<slice stem>_mask.png``;
* ``images/`` + ``masks/``: ``masks/<slice stem>.png``;
* ``data_mask.csv`` and COCO datasets: ``<image folder>/<slice stem>_mask.png`` plus an index
  :data:`INDEX_CSV` (open that CSV);
* NIfTI / DICOM volumes: ``<patient id>/<patient id>_<n>.png`` and ``..._<n>_mask.png``
  (the ``kaggle_3m`` layout; slice images are included, windowed to 8 bits).

Masks are 8-bit PNGs, 0 and 255, the LGG ``_mask`` convention. A text file :data:`README_NAME` in the ZIP
says what it holds.

Privacy: no export contains DICOM header fields other than :func:`~brainviewer.data.volumes.safe_dicom_summary`'s.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
import zipfile
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from brainviewer import __version__
from brainviewer.data.volumes import Volume, safe_relative_name
from brainviewer.evaluation.evaluate import EvaluationReport, report_patients_csv
from brainviewer.files import write_new
from brainviewer.views.overlay import (
    DEFAULT_DISPLAY_CHANNEL,
    GT_COLOR,
    PRED_COLOR,
    display_rgb,
    image_to_png_bytes,
    mask_to_png_bytes,
    overlay,
)
from brainviewer.views.patient import SCANNER_KINDS, PatientSummary

#: Index written into mask ZIPs of ``data_mask.csv`` / COCO datasets (columns of ``data_mask.csv``).
INDEX_CSV = "predicted_data_mask.csv"
#: The explanation file inside every masks ZIP.
README_NAME = "BRAINVIEWER_PREDICTIONS.txt"
#: Kinds whose masks live beside their images as ``<stem>_mask.png`` without an index.
_BESIDE_KINDS = ("kaggle_3m",)


def safe_file_stem(text: str) -> str:
    """``text`` reduced to a file-name-safe stem (letters, digits, ``._-``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return stem or "patient"


def export_layout(volume: Volume, include_images: bool | None = None) -> tuple[list[str], list[str], bool]:
    """Relative paths of each slice's image and predicted mask inside a masks ZIP.

    Args:
        volume: the patient.
        include_images: whether slice images go into the ZIP too; default: only for volumes
            that do not come from a dataset folder (NIfTI, DICOM).

    Returns:
        ``(image_paths, mask_paths, include_images)``, POSIX paths, one per slice. Image paths
        are where the images are (or will be, when included: as ``.png``).
    """
    if volume.slice_paths is None:
        stem = safe_file_stem(volume.patient_id)
        images = [f"{stem}/{stem}_{i + 1}.png" for i in range(volume.n_slices)]
        return images, [f"{stem}/{stem}_{i + 1}_mask.png" for i in range(volume.n_slices)], True
    include = bool(include_images)
    images, masks = [], []
    for original in volume.slice_paths:
        path = PurePosixPath(safe_relative_name(original))
        image = path.with_suffix(".png") if include else path
        images.append(str(image))
        if volume.source_kind == "image_mask_folders" and path.parts[0] == "images":
            masks.append(str(PurePosixPath("masks", *path.parts[1:]).with_suffix(".png")))
        else:
            masks.append(str(path.with_name(f"{path.stem}_mask.png")))
    return images, masks, include


def _image_png(image: np.ndarray) -> bytes:
    """A slice as lossless PNG: 8-bit and 16-bit grey / 8-bit RGB as they are, others windowed to 8 bits."""
    buffer = io.BytesIO()
    if image.dtype == np.uint16 and image.ndim == 2:
        Image.fromarray(image).save(buffer, format="PNG")
        return buffer.getvalue()
    if image.dtype != np.uint8:
        raise ValueError("use Volume.display_image() for non-8-bit slices")
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def masks_zip_bytes(
    volume: Volume,
    pred_masks: Sequence[np.ndarray],
    include_images: bool | None = None,
    model_name: str | None = None,
    threshold: float | None = None,
    created: datetime | None = None,
) -> bytes:
    """A ZIP of predicted masks in the dataset's own layout (see the module docstring).

    Args:
        volume: the patient the masks belong to.
        pred_masks: one ``(H, W)`` bool mask per slice.
        include_images: also store the slice images (default: only for NIfTI/DICOM volumes).
        model_name, threshold: recorded in the ZIP's README.
        created: time stamp of the entries (default: now).

    Returns:
        The ZIP's bytes.
    """
    if len(pred_masks) != volume.n_slices:
        raise ValueError(f"{len(pred_masks)} masks for {volume.n_slices} slices.")
    created = created or datetime.now(timezone.utc)
    stamp = created.timetuple()[:6]
    images, masks, include = export_layout(volume, include_images)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:

        def add(name: str, data: bytes | str) -> None:
            archive.writestr(zipfile.ZipInfo(name, date_time=stamp), data, compress_type=zipfile.ZIP_DEFLATED)

        add(README_NAME, _zip_readme(volume, include, model_name, threshold, created))
        for i, (mask, mask_path) in enumerate(zip(pred_masks, masks, strict=True)):
            if np.asarray(mask).shape != volume.shape:
                raise ValueError(f"mask {i} is {np.asarray(mask).shape}; the slices are {volume.shape}.")
            add(mask_path, mask_to_png_bytes(mask))
            if include:
                image = volume.slices[i]
                lossless = image.dtype == np.uint8 or (image.dtype == np.uint16 and image.ndim == 2)
                if volume.source_kind in SCANNER_KINDS or not lossless:
                    image = volume.display_image(i)  # scanner units: the volume-windowed view the model saw
                add(images[i], _image_png(image))
        if volume.slice_paths is not None and volume.source_kind not in (*_BESIDE_KINDS, "image_mask_folders"):
            add(INDEX_CSV, _index_csv(volume.patient_id, images, masks, pred_masks))
    return buffer.getvalue()


def _index_csv(patient_id: str, images: list[str], masks: list[str], pred_masks: Sequence[np.ndarray]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["patient_id", "image_path", "mask_path", "mask"])
    for image, mask_path, mask in zip(images, masks, pred_masks, strict=True):
        writer.writerow([patient_id, image, mask_path, int(np.asarray(mask).any())])
    return out.getvalue()


def _zip_readme(
    volume: Volume, include: bool, model_name: str | None, threshold: float | None, created: datetime
) -> str:
    lines = [
        "Predicted tumour masks written by brainviewer (a research tool, not for diagnosis).",
        f"Patient: {volume.patient_id} ({volume.n_slices} slices, source {volume.source_kind})",
        f"Model: {model_name or 'unknown'}; threshold: {'unknown' if threshold is None else f'{threshold:.2f}'}",
        f"Created: {created:%Y-%m-%d %H:%M %Z}".rstrip(),
        "",
        "Masks are 8-bit PNG files (0 = background, 255 = predicted tumour) at the slices' own size.",
    ]
    if include:
        lines.append("Slice images are included: unpack anywhere and open the folder in brainviewer.")
    else:
        lines += [
            "Paths are relative to the dataset folder. Unpack into a COPY of the dataset that holds only its",
            "images (unpacking into the original would replace its ground-truth masks), then open it in brainviewer.",
        ]
    if volume.slice_paths is not None and volume.source_kind not in (*_BESIDE_KINDS, "image_mask_folders"):
        lines.append(f"Open {INDEX_CSV} as the dataset (it lists each image with its predicted mask).")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# CSV / JSON
# --------------------------------------------------------------------------------------------


def _fmt(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return f"{value:.6f}"
    return value


def slices_csv(summary: PatientSummary, volume: Volume | None = None) -> str:
    """Per-slice metrics of one patient as CSV text.

    Columns: ``patient_id, slice`` (1-based) ``, name, truth_area_px, pred_area_px, dice, max_prob,
    truth_tumour, pred_tumour``. Empty cells mean "no ground truth" (or no probabilities).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = ["truth_area_px", "pred_area_px", "dice", "max_prob", "truth_tumour", "pred_tumour"]
    writer.writerow(["patient_id", "slice", "name", *columns])
    names = volume.slice_names if volume is not None else [""] * summary.n_slices
    for row, name in zip(summary.slice_rows(), names, strict=True):
        writer.writerow([summary.patient_id, row["slice"], name, *(_fmt(row[c]) for c in columns)])
    return out.getvalue()


#: Columns of :func:`patients_csv`.
PATIENT_COLUMNS = (
    "patient_id",
    "n_slices",
    "threshold",
    "gt_tumour_slices",
    "pred_tumour_slices",
    "gt_voxels",
    "pred_voxels",
    "gt_volume_mm3",
    "pred_volume_mm3",
    "volume_dice",
    "tumour_slice_dice",
)


def patients_csv(summaries: Sequence[PatientSummary]) -> str:
    """Whole-patient numbers of one or more patients as CSV text (columns :data:`PATIENT_COLUMNS`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PATIENT_COLUMNS)
    for summary in summaries:
        values = summary.as_dict()
        writer.writerow([_fmt(values[c]) for c in PATIENT_COLUMNS])
    return out.getvalue()


def evaluation_patients_csv(report: EvaluationReport) -> str:
    """Per-patient rows of a dataset evaluation as CSV text (the ``per_patient.csv`` of ``evaluate --out``)."""
    return report_patients_csv(report)


def evaluation_slices_csv(rows: Sequence[dict]) -> str:
    """Per-slice rows of a dataset evaluation (dicts with the same keys) as CSV text."""
    out = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    return out.getvalue()


def evaluation_json(report: EvaluationReport, extra: dict | None = None) -> str:
    """The evaluation (summary and per-patient results) as indented JSON text."""
    return json.dumps({**report.to_json(), **(extra or {})}, indent=2, default=_json_default) + "\n"


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# --------------------------------------------------------------------------------------------
# HTML report
# --------------------------------------------------------------------------------------------


def _png_data_uri(picture: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(image_to_png_bytes(picture)).decode("ascii")


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _volume_text(voxels: int | None, mm3: float | None) -> str:
    if voxels is None:
        return "n/a (no ground truth)"
    text = f"{voxels:,} voxels"
    if mm3 is not None:
        text += f" = {mm3:,.1f} mm³" if mm3 < 1000 else f" = {mm3:,.0f} mm³"
        text += f" ({mm3 / 1000:.2f} mL)"
    return text


def patient_report_html(
    volume: Volume,
    summary: PatientSummary,
    pred_masks: Sequence[np.ndarray],
    model_name: str,
    threshold: float,
    created: datetime | None = None,
    note: str = "",
    source: str | None = None,
    display_channel: int | None = DEFAULT_DISPLAY_CHANNEL,
) -> str:
    """A self-contained one-page HTML report of one patient (pictures embedded as base64 PNG).

    Holds: patient id (neutral), date, model name and threshold, tumour volumes (voxels, and mm³
    when the spacing is known) by ground truth and by prediction, volume Dice and mean
    tumour-slice Dice, the key slices (largest ground-truth and largest predicted tumour) as scan /
    ground truth (red) / prediction (green) panels, a table of the tumour-bearing slices, and the
    volume's technical fields. No identifying header fields (see :mod:`brainviewer.data.volumes`).

    Args:
        volume: the patient.
        summary: its :class:`~brainviewer.views.patient.PatientSummary`.
        pred_masks: the predicted masks the summary was made from.
        model_name: the weights' name.
        threshold: the probability cut used.
        created: report time (default: now, UTC).
        note: a warning shown at the top, e.g. ``"SYNTHETIC PHANTOM: not a real scan"``.
        source: where the patient comes from (default: the reader kind, e.g. ``kaggle_3m``), e.g. a phantom's.
        display_channel: a 3-channel scan's channel drawn in grayscale, as the pages do (``None``: RGB).

    Returns:
        The HTML text (UTF-8).
    """
    created = created or datetime.now(timezone.utc)
    esc = html.escape
    gt_slices, pred_slices = summary.gt_tumour_slices, summary.pred_tumour_slices
    rows = [
        ("Slices", f"{summary.n_slices}" + (f" ({volume.shape[1]}×{volume.shape[0]} px)")),
        (
            "Voxel spacing",
            "unknown"
            if volume.spacing_mm is None
            else " × ".join(f"{v:.3g}" for v in volume.spacing_mm) + " mm (row × column × slice)",
        ),
        ("Tumour slices, ground truth", f"{len(gt_slices)}" if summary.has_ground_truth else "n/a (no ground truth)"),
        ("Tumour slices, predicted", f"{len(pred_slices)}"),
        ("Tumour volume, ground truth", _volume_text(summary.gt_voxels, summary.gt_volume_mm3)),
        ("Tumour volume, predicted", _volume_text(summary.pred_voxels, summary.pred_volume_mm3)),
        ("Volume Dice", _num(summary.volume_dice)),
        ("Mean Dice over ground-truth tumour slices", _num(summary.tumour_slice_dice)),
    ]
    table = "\n".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    figures = []
    for index in summary.key_slices:
        image = volume.display_image(index)
        base = display_rgb(image, display_channel)
        truth = volume.mask(index)
        pred = np.asarray(pred_masks[index], dtype=bool)
        why = []
        if index == summary.largest_gt_slice:
            why.append("largest ground-truth tumour")
        if index == summary.largest_pred_slice:
            why.append("largest predicted tumour")
        dice = summary.slice_dice[index]
        caption = f"Slice {index + 1} of {summary.n_slices}" + (f": {', '.join(why)}" if why else "")
        caption += f" · Dice {_num(dice)}" if dice is not None else ""
        gray = image.ndim == 3 and display_channel is not None  # the red truth never mixed with RGB colours
        panels = [(f"Scan (channel {display_channel + 1} of 3, grayscale)" if gray else "Scan", base)]
        if truth is not None:
            panels.append(("Ground truth (red)", overlay(base, truth, GT_COLOR, 0.35, contour=True, base=base)))
        panels.append(
            (
                f"Prediction (green), threshold {threshold:.2f}",
                overlay(base, pred, PRED_COLOR, 0.35, contour=True, base=base),
            )
        )
        cells = "".join(
            f'<figure><img alt="{esc(title)}" src="{_png_data_uri(picture)}"><figcaption>{esc(title)}</figcaption>'
            "</figure>"
            for title, picture in panels
        )
        figures.append(f'<section class="key"><h3>{esc(caption)}</h3><div class="row">{cells}</div></section>')
    tumour_rows = (
        "\n".join(
            "<tr>"
            f"<td>{i + 1}</td><td>{esc(_num(summary.truth_area_px[i]))}</td><td>{summary.pred_area_px[i]:,}</td>"
            f"<td>{esc(_num(summary.slice_dice[i]))}</td></tr>"
            for i in summary.tumour_slices
        )
        or '<tr><td colspan="4">No tumour by ground truth or prediction.</td></tr>'
    )
    info = "".join(f"<li>{esc(str(k))}: {esc(str(v))}</li>" for k, v in volume.info.items())
    notes = "".join(f"<li>{esc(n)}</li>" for n in volume.notes)
    warning = f'<p class="warn">{esc(note)}</p>' if note else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>brainviewer report: {esc(volume.patient_id)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #1f2430; max-width: 1100px; }}
h1 {{ font-size: 1.4em; margin-bottom: 0.2em; }} h2 {{ font-size: 1.1em; margin-top: 1.4em; }}
h3 {{ font-size: 0.95em; margin: 0.8em 0 0.3em; }}
.meta {{ color: #555b66; }} .warn {{ background: #fff3cd; border: 1px solid #e0c36a; padding: 8px 12px; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #d5d9e0; padding: 3px 8px; text-align: left; }}
th {{ background: #f3f5f8; font-weight: 600; }}
.row {{ display: flex; gap: 8px; flex-wrap: wrap; }}
figure {{ margin: 0; }} figure img {{ width: 240px; image-rendering: pixelated; display: block; }}
figcaption {{ font-size: 0.8em; color: #555b66; }}
footer {{ margin-top: 2em; font-size: 0.8em; color: #6b7280; }}
</style>
</head>
<body>
<h1>Patient {esc(volume.patient_id)}</h1>
<p class="meta">Model <b>{esc(model_name)}</b> · threshold {threshold:.2f} ·
{esc(created.strftime("%Y-%m-%d %H:%M %Z").strip())} · source {esc(source or volume.source_kind)}</p>
{warning}
<h2>Summary</h2>
<table>
{table}
</table>
<h2>Key slices</h2>
{"".join(figures)}
<h2>Tumour-bearing slices</h2>
<table><tr><th>Slice</th><th>Ground truth (px)</th><th>Predicted (px)</th><th>Dice</th></tr>
{tumour_rows}
</table>
<h2>Volume</h2>
<ul>{info}</ul>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<footer>Made with brainviewer {esc(__version__)}. A research tool: not for diagnosis or treatment decisions.
Dice is 1.000 on a slice where both masks are empty.</footer>
</body>
</html>
"""


def save_new(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` only if it does not exist (atomically); else raise FileExistsError."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another name.")
    write_new(path, data)
    return path
