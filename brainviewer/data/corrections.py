"""The corrections dataset: masks a user corrected in the app, saved as a dataset the app and the trainer read.

Layout (``kaggle_3m``-like, so :func:`brainviewer.data.datasets.open_dataset` opens it)::

    corrections/
      <patient>/<name>.png          the scan as the model saw it (PNG; TIFF for float or 16-bit colour scans)
      <patient>/<name>_mask.png     the corrected mask, 0/255
      <patient>/<name>.json         provenance: source scan (name, path, sha256), model, threshold, time,
                                    pixels added and removed, the previous version's record (if any)
      <patient>/.history/<name>-v1.png, -v1_mask.png, -v1.json ...   earlier saves of the same slice
      .mixes/<stamp>/data_mask.csv  indexes written to train on the corrections (alone or with a dataset),
                                    with mix.json (what was mixed), split.json (mixed: the split kept) and
                                    corrected.csv (mixed: the corrected slices alone, for the comparison)

The dataset holds one file pair per slice: a slice saved again moves its earlier files into the patient's
hidden ``.history`` folder (renamed ``<name>-v1`` ``-v2`` ..., with hard links, never over a file) and the new
correction takes the slice's own name; a save identical to the saved mask writes nothing. Nothing is ever
overwritten: every file is created with :func:`brainviewer.files.write_new`. The dataset readers and
:func:`latest_corrections` skip hidden folders; folders saved before this layout may still hold
``<name>-v2`` files beside ``<name>``, and :func:`latest_corrections` trains on the newest of them. The
folder is ``$BRAINVIEWER_CORRECTIONS_DIR``, by default ``corrections/`` in the working directory.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from brainviewer.data.datasets import Dataset, SliceRecord, open_dataset, write_data_mask_csv
from brainviewer.data.naming import natural_key
from brainviewer.data.split import SPLIT_FILE, Split
from brainviewer.files import write_new

logger = logging.getLogger(__name__)

CORRECTIONS_ENV = "BRAINVIEWER_CORRECTIONS_DIR"
DEFAULT_FOLDER = "corrections"
MIXES_FOLDER = ".mixes"
HISTORY_FOLDER = ".history"
INDEX_FILE = "data_mask.csv"
MIX_INFO_FILE = "mix.json"
CORRECTED_INDEX_FILE = "corrected.csv"
PROVENANCE_SCHEMA = "brainviewer-correction/1"
#: Earlier versions of one slice kept in its history before giving up (each new save adds one).
MAX_VERSIONS = 1000


def corrections_root() -> Path:
    """The corrections folder: ``$BRAINVIEWER_CORRECTIONS_DIR``, else ``./corrections`` (may not exist yet)."""
    value = os.environ.get(CORRECTIONS_ENV, "").strip()
    return Path(value).expanduser() if value else Path.cwd() / DEFAULT_FOLDER


def safe_part(text: str, fallback: str) -> str:
    """``text`` as one file-name part: letters, digits, ``.``, ``_`` and ``-`` only (never a path)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return cleaned or fallback


def patient_folder(patient_id: str | None, scan_name: str) -> str:
    """The patient folder of a correction: the known patient id, else the ``<patient>`` of a
    ``<patient>_<n>`` scan name, else the scan's own stem (a patient of one image)."""
    if patient_id:
        return safe_part(patient_id, "patient")
    stem = Path(scan_name).stem
    match = re.fullmatch(r"(.+)_\d+", stem)
    return safe_part(match.group(1) if match else stem, "patient")


def image_sha256(image: np.ndarray) -> str:
    """sha256 of a scan's pixels, dtype and shape (the same pixels hash the same whatever file held them)."""
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def encode_scan(image: np.ndarray) -> tuple[bytes, str]:
    """``(file bytes, suffix)`` of a scan stored losslessly: PNG for uint8 and for 16-bit grayscale,
    TIFF otherwise (float scans, 16-bit colour)."""
    image = np.asarray(image)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"a scan is (H, W) or (H, W, 3), got shape {image.shape}")
    if image.dtype == np.uint8 or (image.dtype == np.uint16 and image.ndim == 2):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        return buffer.getvalue(), ".png"
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image)
    return buffer.getvalue(), ".tif"


def mask_png(mask: np.ndarray) -> bytes:
    """A ``(H, W)`` bool mask as a 0/255 grayscale PNG (like the LGG ``_mask`` files)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class SourceScan:
    """Where a corrected scan came from.

    Attributes:
        name: its file name (``TCGA_CS_4943_20000902_16.tif``) or label.
        patient_id: its patient, when known.
        path: its file on the server (a dataset slice), or ``""`` for an upload or a generated slice.
        kind: ``dataset``, ``upload``, ``volume`` or ``phantom``.
    """

    name: str
    patient_id: str | None = None
    path: str = ""
    kind: str = "upload"


@dataclass(frozen=True)
class SavedCorrection:
    """The files one save wrote (all new) and its provenance record; ``unchanged``: nothing was written, the
    slice's saved correction already holds this scan and mask (the paths and record are that save's)."""

    scan: Path
    mask: Path
    record_path: Path
    record: dict
    unchanged: bool = False


def _current_files(folder: Path, stem: str) -> list[Path]:
    """The files of the saved correction named ``stem`` in ``folder`` (scan, mask, record), those present."""
    names = (f"{stem}.png", f"{stem}.tif", f"{stem}_mask.png", f"{stem}.json")
    return [folder / n for n in names if (folder / n).is_file()]


def _same_as_saved(folder: Path, stem: str, image: np.ndarray, corrected: np.ndarray) -> SavedCorrection | None:
    """The saved correction ``stem`` when it holds this very scan and mask, else ``None``."""
    record_path, mask_path = folder / f"{stem}.json", folder / f"{stem}_mask.png"
    try:
        record = json.loads(record_path.read_text())
        with Image.open(mask_path) as picture:
            saved = np.asarray(picture.convert("L")) > 127
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or (record.get("source") or {}).get("sha256") != image_sha256(image):
        return None
    if saved.shape != corrected.shape or not (saved == corrected).all():
        return None
    return SavedCorrection(folder / str(record.get("scan")), mask_path, record_path, record, unchanged=True)


def _move_new(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` atomically, never over an existing ``dst`` (FileExistsError)."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system
        if dst.exists():
            raise FileExistsError(f"{dst} already exists") from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _to_history(folder: Path, stem: str) -> tuple[int, dict[str, str]]:
    """Move the saved correction ``stem`` into ``folder/.history`` as the first free ``<stem>-vN``;
    ``(N, {"scan"|"mask"|"record": path relative to folder})`` (``(0, {})`` when nothing was saved)."""
    files = _current_files(folder, stem)
    if not files:
        return 0, {}
    history = folder / HISTORY_FOLDER
    history.mkdir(exist_ok=True)
    for version in range(1, MAX_VERSIONS + 1):
        name = f"{stem}-v{version}"
        if any(history.glob(f"{glob.escape(name)}[._]*")):
            continue
        moved: dict[str, str] = {}
        for path in files:
            rest = path.name[len(stem) :]
            target = history / f"{name}{rest}"
            try:
                _move_new(path, target)
            except FileNotFoundError:  # another save moved it a moment ago
                continue
            except FileExistsError:  # another save took this version a moment ago: the rest goes to the next
                break
            kind = "mask" if rest == "_mask.png" else "record" if rest == ".json" else "scan"
            moved[kind] = f"{HISTORY_FOLDER}/{target.name}"
        else:
            return version, moved
        files = _current_files(folder, stem)
    raise ValueError(f"{folder / HISTORY_FOLDER} already holds {MAX_VERSIONS} versions of {stem}; move some away.")


def save_correction(
    root: str | Path,
    source: SourceScan,
    image: np.ndarray,
    predicted: np.ndarray,
    corrected: np.ndarray,
    model: dict,
    threshold: float | None,
) -> SavedCorrection:
    """Save a corrected mask with its scan and provenance into the corrections dataset at ``root``.

    Args:
        root: the corrections folder (created when missing).
        source: where the scan came from.
        image: ``(H, W)`` or ``(H, W, 3)`` scan as the model read it (uint8, uint16 or float32).
        predicted: ``(H, W)`` bool mask the model predicted (what the correction started from).
        corrected: ``(H, W)`` bool corrected mask.
        model: ``{"label": ..., "id": ...}`` of the model that predicted.
        threshold: the probability threshold of the prediction.

    Returns:
        :class:`SavedCorrection`: new files ``<patient>/<name>.png``, ``<name>_mask.png`` and ``<name>.json``
        (an earlier save of the slice moved to ``<patient>/.history/<name>-vN.*`` first, and named in the
        record's ``previous``); or, with ``unchanged``, the earlier save when it holds this scan and mask.

    Raises:
        ValueError: masks that do not match the scan's size (the message gives both sizes).
    """
    image = np.asarray(image)
    predicted, corrected = np.asarray(predicted, dtype=bool), np.asarray(corrected, dtype=bool)
    if predicted.shape != image.shape[:2] or corrected.shape != image.shape[:2]:
        raise ValueError(
            f"the masks are {predicted.shape} and {corrected.shape} but the scan is {image.shape[:2]}; "
            "correct the mask of this scan"
        )
    folder = Path(root) / patient_folder(source.patient_id, source.name)
    folder.mkdir(parents=True, exist_ok=True)
    scan_bytes, suffix = encode_scan(image)
    stem = safe_part(Path(source.name).stem, "scan")
    same = _same_as_saved(folder, stem, image, corrected)
    if same is not None:
        logger.info("%s is already saved with this mask; nothing written", same.mask)
        return same
    for _ in range(3):  # another save of this slice between the move and the write: move that one too
        previous_version, previous = _to_history(folder, stem)
        try:
            scan_path = write_new(folder / f"{stem}{suffix}", scan_bytes)
            break
        except FileExistsError:
            continue
    else:
        raise ValueError(f"{folder / stem} is being saved by someone else right now; save again in a moment.")
    name, version = stem, previous_version + 1
    mask_path = write_new(folder / f"{name}_mask.png", mask_png(corrected))
    record = {
        "schema": PROVENANCE_SCHEMA,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "patient_id": folder.name,
        "scan": scan_path.name,
        "version": version,
        "mask": mask_path.name,
        "previous": previous or None,
        "source": {
            "name": source.name,
            "patient_id": source.patient_id,
            "path": source.path,
            "kind": source.kind,
            "sha256": image_sha256(image),
            "shape": list(image.shape),
            "dtype": str(image.dtype),
        },
        "model": {"label": model.get("label"), "id": model.get("id")},
        "threshold": None if threshold is None else float(threshold),
        "pixels": {
            "predicted": int(np.count_nonzero(predicted)),
            "corrected": int(np.count_nonzero(corrected)),
            "added": int(np.count_nonzero(corrected & ~predicted)),
            "removed": int(np.count_nonzero(predicted & ~corrected)),
        },
    }
    record_path = write_new(folder / f"{name}.json", json.dumps(record, indent=2) + "\n")
    logger.info("saved a correction of %s to %s", source.name, scan_path)
    return SavedCorrection(scan_path, mask_path, record_path, record)


def read_records(root: str | Path) -> list[dict]:
    """Every provenance record under ``root`` (unreadable ones skipped), each with ``"_folder"`` added."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = []
    for path in sorted(root.glob("*/*.json"), key=lambda p: natural_key(str(p))):
        if path.parent.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            logger.warning("skipping unreadable correction record %s", path)
            continue
        if isinstance(record, dict) and record.get("schema") == PROVENANCE_SCHEMA:
            records.append({**record, "_folder": str(path.parent)})
    return records


def latest_corrections(root: str | Path) -> list[SliceRecord]:
    """The newest saved version of each corrected source scan, as dataset slices (patients in natural order).

    Earlier saves moved to a patient's ``.history`` folder are not read; in a folder saved before that layout
    (``<name>`` and ``<name>-v2`` side by side) the newest of them counts. Only corrections whose scan and
    mask files are both present count.
    """
    newest: dict[tuple[str, str], dict] = {}
    for record in read_records(root):
        key = (record["patient_id"], record["source"].get("sha256") or record["scan"])
        order = (record["saved_at"], record.get("version", 1))
        if key not in newest or order >= (newest[key]["saved_at"], newest[key].get("version", 1)):
            newest[key] = record
    slices = []
    for record in newest.values():
        folder = Path(record["_folder"])
        scan, mask = folder / record["scan"], folder / record["mask"]
        if scan.is_file() and mask.is_file():
            slices.append(SliceRecord(record["patient_id"], scan, mask))
    slices.sort(key=lambda r: (natural_key(r.patient_id), natural_key(r.image_path.stem)))
    return slices


@dataclass(frozen=True)
class TrainingIndex:
    """An index written to train on corrections: the ``data_mask.csv``, the split file that keeps the
    corrected patients in training (``None`` for corrections alone), and the corrected patients."""

    csv: Path
    split_file: Path | None
    corrected_patients: list[str]


def _new_mix_folder(root: Path, label: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 100):
        folder = root / MIXES_FOLDER / (f"{stamp}-{label}" + ("" if attempt == 1 else f"-{attempt}"))
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise ValueError(f"could not make a new folder under {root / MIXES_FOLDER}; remove old mixes there.")


def write_training_index(
    root: str | Path, dataset_path: str | Path | None = None, base: Split | None = None
) -> TrainingIndex:
    """Write a ``data_mask.csv`` to train on the corrections at ``root``, alone or mixed with a dataset.

    Alone: the newest version of every corrected slice; the trainer splits these patients by patient.
    Mixed: every slice of the dataset at ``dataset_path``, except that a corrected patient contributes only
    its corrected slices (the reviewed labels); a split file keeps every corrected patient in training and
    every other patient on the side ``base`` (the base model's split) gave it, so the base model's held-out
    patients stay held out and the run is compared with it on patients neither has trained on.

    Raises:
        ValueError: no corrections saved yet, or a dataset whose labels are not mask files (COCO).
    """
    root = Path(root)
    corrections = latest_corrections(root)
    if not corrections:
        raise ValueError(f"{root} holds no saved corrections yet; correct a mask on the Review or Patients page first.")
    corrected = sorted({r.patient_id for r in corrections}, key=natural_key)
    records = list(corrections)
    if dataset_path is not None:
        dataset = open_dataset(dataset_path)
        records += [r for r in dataset if r.patient_id not in set(corrected)]
    folder = _new_mix_folder(root, "alone" if dataset_path is None else "mixed")
    csv_path = write_data_mask_csv(Dataset(root, "data_mask_csv", records), folder / INDEX_FILE, relative=False)
    corrected_csv = csv_path
    if dataset_path is not None:  # the corrected slices alone, to score the run on what it learned from
        corrected_csv = write_data_mask_csv(
            Dataset(root, "data_mask_csv", corrections), folder / CORRECTED_INDEX_FILE, relative=False
        )
    info = {
        "corrections": str(root.resolve()),
        "dataset": None if dataset_path is None else str(Path(dataset_path).resolve()),
        "corrected_patients": corrected,
        "corrected_index": str(corrected_csv.resolve()),
    }
    write_new(folder / MIX_INFO_FILE, json.dumps(info, indent=2) + "\n")
    if dataset_path is None:
        return TrainingIndex(csv_path, None, corrected)
    seen = base.seen if base is not None else set()
    held_out = [p for p in (base.val if base is not None else []) if p not in set(corrected)]
    split = Split(
        train=sorted(set(corrected) | seen, key=natural_key),
        val=held_out,
        mode=base.mode if base is not None else "random",
        seed=base.seed if base is not None else 42,
    )
    split_path = write_new(folder / SPLIT_FILE, json.dumps(asdict(split), indent=2) + "\n")
    return TrainingIndex(csv_path, split_path, corrected)
