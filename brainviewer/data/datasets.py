"""Datasets the app and the engine read, all reduced to one index of slices.

Supported layouts (detected by :func:`open_dataset`):

* ``kaggle_3m``: ``<root>/<patient folder>/<patient folder>_<n>.<ext>`` with
  ``..._<n>_mask.<ext>`` beside each slice (the Kaggle LGG MRI Segmentation set).
  ``root`` may be the ``kaggle_3m`` folder or its parent.
* ``data_mask.csv``: the index LGG notebooks use, columns
  ``patient_id,image_path,mask_path,mask`` (paths absolute or relative to the CSV).
* ``images/`` + ``masks/``: paired files with the same name (figshare-style). Each
  image is its own "patient" (the unit of evaluation) unless a ``patients.csv``
  (``file,patient_id``) says otherwise.
* COCO JSON (``_annotations.coco.json`` or any ``*.json`` with ``images`` and
  ``annotations``): polygons are rasterised into masks.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PureWindowsPath

import numpy as np

from brainviewer.data.io import (
    IMAGE_SUFFIXES,
    is_mask_name,
    natural_key,
    read_image,
    read_mask,
    scan_stem_for_mask,
)
from brainviewer.files import write_new

logger = logging.getLogger(__name__)

#: Environment variable naming the dataset folder the app opens by default.
DATA_ENV = "BRAINVIEWER_DATA"
DATA_MASK_CSV = "data_mask.csv"
DATA_MASK_COLUMNS = ("patient_id", "image_path", "mask_path", "mask")
#: The layouts :func:`open_dataset` reads, for error messages.
SUPPORTED_LAYOUTS = (
    "a kaggle_3m folder (patient folders holding <slice>.<ext> and <slice>_mask.<ext> files), "
    "a data_mask.csv (patient_id,image_path,mask_path,mask), images/ + masks/ folders of same-named "
    "files, or a COCO _annotations.coco.json"
)


class DatasetError(ValueError):
    """A folder is not a dataset brainviewer can read. The message says what it expects."""


@dataclass(frozen=True)
class SliceRecord:
    """One slice of a dataset.

    Attributes:
        patient_id: the unit of evaluation (a patient volume, or one image).
        image_path: the scan file.
        mask_path: its ground-truth mask file, if any.
        index: the slice's position within its patient (0-based, in slice order).
        polygons: COCO polygons (flat ``[x0, y0, x1, y1, ...]`` lists) instead of a mask file.
    """

    patient_id: str
    image_path: Path
    mask_path: Path | None = None
    index: int = 0
    polygons: tuple[tuple[float, ...], ...] | None = None

    @property
    def name(self) -> str:
        return self.image_path.name

    @property
    def has_ground_truth(self) -> bool:
        return self.mask_path is not None or self.polygons is not None


@dataclass
class Dataset:
    """An ordered index of slices grouped by patient.

    Attributes:
        root: the folder (or file) it was opened from.
        kind: ``kaggle_3m``, ``data_mask_csv``, ``image_mask_folders`` or ``coco``.
        records: slices, patient by patient, each patient's slices in slice order.
    """

    root: Path
    kind: str
    records: list[SliceRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[SliceRecord]:
        return iter(self.records)

    @cached_property
    def patients(self) -> dict[str, list[SliceRecord]]:
        """Patient id -> that patient's slices in order (patients in natural order)."""
        grouped: dict[str, list[SliceRecord]] = {}
        for record in self.records:
            grouped.setdefault(record.patient_id, []).append(record)
        return {pid: grouped[pid] for pid in sorted(grouped, key=natural_key)}

    @property
    def patient_ids(self) -> list[str]:
        return list(self.patients)

    def subset(self, patient_ids: list[str] | set[str]) -> Dataset:
        """A dataset holding only the given patients."""
        wanted = set(patient_ids)
        return Dataset(self.root, self.kind, [r for r in self.records if r.patient_id in wanted])

    def load_image(self, record: SliceRecord) -> np.ndarray:
        """The scan of ``record``: ``(H, W)`` or ``(H, W, 3)`` (see :func:`brainviewer.data.io.read_image`)."""
        return read_image(record.image_path)

    def load_mask(self, record: SliceRecord, shape: tuple[int, int] | None = None) -> np.ndarray | None:
        """The ground truth of ``record`` as ``(H, W)`` bool, or ``None`` when it has none."""
        if record.polygons is not None:
            if shape is None:
                shape = self.load_image(record).shape[:2]
            return rasterise_polygons(record.polygons, shape)
        if record.mask_path is None:
            return None
        return read_mask(record.mask_path, shape=shape)

    def largest_truth_index(self, patient_id: str) -> int:
        """Index of the patient's slice with the largest ground-truth area (the middle one if none has tumour;
        a mask that cannot be read counts as empty)."""
        records = self.patients[patient_id]
        areas = []
        for record in records:
            try:
                mask = self.load_mask(record)
            except Exception:
                mask = None
            areas.append(0 if mask is None else int(np.count_nonzero(mask)))
        return int(np.argmax(areas)) if max(areas, default=0) > 0 else len(records) // 2


def rasterise_polygons(polygons: tuple[tuple[float, ...], ...], shape: tuple[int, ...]) -> np.ndarray:
    """Fill COCO polygons (flat ``x0, y0, x1, y1, ...`` lists in pixels) into a ``(H, W)`` bool mask.

    COCO coordinates put pixel ``(row r, column c)`` on the square ``[c, c+1] x [r, r+1]``.
    A pixel is tumour when its centre ``(c + 0.5, r + 0.5)`` lies inside a polygon (even-odd
    rule; a centre exactly on a left/top edge is inside, on a right/bottom edge outside), so
    a polygon with integer corners covers exactly its area in pixels, e.g. the box
    ``[2, 10] x [1, 4]`` covers 8 x 3 = 24 pixels. Several polygons are united; polygons with
    fewer than 3 points or non-finite coordinates are ignored.
    """
    height, width = int(shape[0]), int(shape[1])
    mask = np.zeros((height, width), dtype=bool)
    centres_y = np.arange(height, dtype=np.float64) + 0.5
    for poly in polygons:
        points = np.asarray(poly, dtype=np.float64)
        if points.size < 6 or points.size % 2 or not np.isfinite(points).all():
            continue
        points = points.reshape(-1, 2)
        x0, y0 = points[:, 0], points[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        # Each edge crosses the rows whose centre line lies in [min(y), max(y)): half-open so a
        # vertex shared by two edges is counted once, and horizontal edges never count.
        yc = centres_y[:, None]
        rows, edges = np.nonzero(((y0 <= yc) & (yc < y1)) | ((y1 <= yc) & (yc < y0)))
        if rows.size == 0:
            continue
        t = (centres_y[rows] - y0[edges]) / (y1[edges] - y0[edges])
        crossing_x = x0[edges] + t * (x1[edges] - x0[edges])
        # First column whose centre is at or right of the crossing; the inside flips there.
        first = np.clip(np.ceil(crossing_x - 0.5), 0, width).astype(np.int64)
        flips = np.zeros((height, width + 1), dtype=np.int32)
        np.add.at(flips, (rows, first), 1)
        mask |= (np.cumsum(flips[:, :width], axis=1) % 2).astype(bool)
    return mask


def _image_files(folder: Path) -> list[Path]:
    """Supported image files directly in ``folder``, skipping hidden ones (``.DS_Store``, macOS ``._*``)."""
    return [
        p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]


def _find_kaggle_root(root: Path) -> Path | None:
    """The folder whose sub-folders are patients with ``*_mask`` files, if any."""
    for candidate in (root / "kaggle_3m", root):
        if not candidate.is_dir():
            continue
        for sub in sorted(candidate.iterdir()):
            if sub.is_dir() and not sub.name.startswith(".") and any(is_mask_name(p.name) for p in _image_files(sub)):
                return candidate
    return None


def read_kaggle_3m(root: str | Path) -> Dataset:
    """Index a ``kaggle_3m`` folder: patients, then slices in numeric order (``_2`` before ``_10``)."""
    root = Path(root)
    base = _find_kaggle_root(root)
    if base is None:
        raise DatasetError(f"{root} has no patient folders with *_mask files (kaggle_3m layout).")
    records: list[SliceRecord] = []
    folders = (p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in sorted(folders, key=lambda p: natural_key(p.name)):
        files = _image_files(folder)
        masks = {scan_stem_for_mask(p.name): p for p in files if is_mask_name(p.name)}
        scans = sorted((p for p in files if not is_mask_name(p.name)), key=lambda p: natural_key(p.stem))
        for index, scan in enumerate(scans):
            records.append(SliceRecord(folder.name, scan, masks.get(scan.stem), index))
    if not records:
        raise DatasetError(f"{base} holds no slices.")
    return Dataset(root, "kaggle_3m", records)


def _csv_path(text: str, csv_dir: Path) -> Path:
    """A path from a ``data_mask.csv`` cell: relative ones are read against the CSV's folder.

    Windows separators are accepted. A path that does not exist (e.g. ``/kaggle/input/...``
    from a notebook) is looked for by its last two parts (``<patient folder>/<file>``) beside
    the CSV and in a ``kaggle_3m`` folder beside it.
    """
    text = text.strip()
    if "\\" in text:
        text = PureWindowsPath(text).as_posix()
    path = Path(text)
    if not path.is_absolute() and not PureWindowsPath(text).is_absolute():
        return csv_dir / path
    if path.exists():
        return path
    tail = Path(*path.parts[-2:])
    for candidate in (csv_dir / tail, csv_dir / "kaggle_3m" / tail):
        if candidate.exists():
            return candidate
    return path


def inside_folder(path: Path, folder: Path) -> bool:
    """Whether ``path`` (links and ``..`` resolved) lies inside ``folder``."""
    return path.resolve().is_relative_to(folder.resolve())


def outside_error(index: Path, count: int, example: str) -> DatasetError:
    """The message for an index that points outside its own folder; it names the entry, never a server path."""
    return DatasetError(
        f"{index.name} lists {count} file(s) outside its own folder (e.g. the entry {example!r}); "
        "a dataset index may only point at files in its folder or below. Move the files beside it."
    )


def read_data_mask_csv(csv_path: str | Path, confine: bool = False) -> Dataset:
    """Read a ``data_mask.csv`` index (``patient_id,image_path,mask_path,mask``).

    Paths may be absolute or relative to the CSV's folder; an empty ``mask_path`` means the
    slice has no ground truth. The ``mask`` column (1 = tumour) is informative only: the
    mask files are the truth.

    Args:
        csv_path: the CSV file.
        confine: refuse entries that resolve outside the CSV's folder (``../``, absolute paths, links);
            the public demo opens datasets this way.

    Raises:
        DatasetError: missing columns, unreadable text, no rows, files that do not exist, or (with
            ``confine``) files outside the CSV's folder.
    """
    csv_path = Path(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in DATA_MASK_COLUMNS[:3] if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(
                    f"{csv_path} lacks column(s) {', '.join(missing)}; a data_mask.csv has the columns "
                    f"{','.join(DATA_MASK_COLUMNS)}."
                )
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise DatasetError(f"{csv_path} is not a readable UTF-8 CSV file ({err}).") from err
    csv_dir = csv_path.parent
    by_patient: dict[str, list[tuple[Path, Path | None]]] = {}
    for row in rows:
        if not (row.get("image_path") or "").strip():
            continue
        image = _csv_path(row["image_path"], csv_dir)
        mask = _csv_path(row["mask_path"], csv_dir) if (row.get("mask_path") or "").strip() else None
        by_patient.setdefault((row.get("patient_id") or "").strip() or image.parent.name, []).append((image, mask))
    if not by_patient:
        raise DatasetError(f"{csv_path} lists no slices (it has a header but no rows).")
    if confine:
        outside = [
            p for items in by_patient.values() for pair in items for p in pair if p and not inside_folder(p, csv_dir)
        ]
        if outside:
            raise outside_error(csv_path, len(outside), outside[0].name)
    absent = [str(p) for items in by_patient.values() for img, msk in items for p in (img, msk) if p and not p.exists()]
    if absent:
        raise DatasetError(
            f"{csv_path} lists {len(absent)} file(s) that do not exist, e.g. {absent[0]}. Paths are read "
            "relative to the CSV's folder: put the CSV beside the data, or fix its paths."
        )
    records = []
    for pid in sorted(by_patient, key=natural_key):
        items = sorted(by_patient[pid], key=lambda item: natural_key(item[0].stem))
        records.extend(SliceRecord(pid, img, msk, i) for i, (img, msk) in enumerate(items))
    return Dataset(csv_path, "data_mask_csv", records)


def write_data_mask_csv(dataset: Dataset, csv_path: str | Path, relative: bool = True) -> Path:
    """Write ``dataset`` as a ``data_mask.csv`` index (columns ``patient_id,image_path,mask_path,mask``).

    ``mask`` is 1 when the slice's mask holds tumour, 0 when it is empty, and blank (with a
    blank ``mask_path``) when the slice has no ground truth. Paths are relative to the CSV's
    folder when ``relative`` (and possible), else absolute. The file is written to a
    temporary name and moved into place.

    Raises:
        FileExistsError: ``csv_path`` exists (it is never overwritten).
        DatasetError: the dataset's labels are COCO polygons, which have no mask files.
    """
    csv_path = Path(csv_path)
    if csv_path.exists():
        raise FileExistsError(f"{csv_path} already exists; choose another path (it is never overwritten).")
    if any(record.polygons is not None for record in dataset):
        raise DatasetError(
            "this dataset's labels are COCO polygons, not mask files, so a data_mask.csv cannot point at them. "
            "Open the COCO .json directly instead."
        )
    base = csv_path.parent.resolve()

    def rel(path: Path) -> str:
        path = path.resolve()
        if relative:
            try:
                return Path(os.path.relpath(path, base)).as_posix()
            except ValueError:  # another drive on Windows
                return str(path)
        return str(path)

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(DATA_MASK_COLUMNS)
    for record in dataset:
        if record.mask_path is None:
            writer.writerow([record.patient_id, rel(record.image_path), "", ""])
            continue
        has_tumour = int(read_mask(record.mask_path).any())
        writer.writerow([record.patient_id, rel(record.image_path), rel(record.mask_path), has_tumour])
    write_new(csv_path, text.getvalue())
    return csv_path


def read_image_mask_folders(root: str | Path) -> Dataset:
    """Index ``images/`` + ``masks/`` folders paired by file stem."""
    root = Path(root)
    images_dir, masks_dir = root / "images", root / "masks"
    if not images_dir.is_dir():
        raise DatasetError(f"{root} has no images/ folder.")
    masks = {p.stem: p for p in _image_files(masks_dir)} if masks_dir.is_dir() else {}
    for p in list(masks.values()):
        stem = scan_stem_for_mask(p.name)
        if stem:
            masks.setdefault(stem, p)
    patient_of: dict[str, str] = {}
    patients_csv = root / "patients.csv"
    if patients_csv.is_file():
        with patients_csv.open(newline="", encoding="utf-8-sig") as handle:
            patient_of = {Path(r["file"]).stem: r["patient_id"] for r in csv.DictReader(handle)}
    scans = sorted(_image_files(images_dir), key=lambda p: natural_key(p.stem))
    if not scans:
        raise DatasetError(f"{images_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}).")
    counters: dict[str, int] = {}
    records = []
    for scan in scans:
        pid = patient_of.get(scan.stem, scan.stem)
        index = counters.get(pid, 0)
        counters[pid] = index + 1
        records.append(SliceRecord(pid, scan, masks.get(scan.stem), index))
    records.sort(key=lambda r: (natural_key(r.patient_id), r.index))
    return Dataset(root, "image_mask_folders", records)


def open_dataset(path: str | Path, confine: bool = False) -> Dataset:
    """Open any supported dataset layout at ``path`` (folder, CSV or COCO JSON).

    Args:
        path: the dataset folder or index file.
        confine: a ``data_mask.csv`` may not point outside its folder (COCO indexes never may).

    Raises:
        DatasetError: when ``path`` matches none of the layouts (the message lists them).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path} does not exist. Give one of: {SUPPORTED_LAYOUTS}.")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return read_data_mask_csv(path, confine)
        if path.suffix.lower() == ".json":
            from brainviewer.data.coco import read_coco

            return read_coco(path)
        raise DatasetError(f"{path} is not a dataset file brainviewer can read. Give one of: {SUPPORTED_LAYOUTS}.")
    if (path / "images").is_dir():
        return read_image_mask_folders(path)
    if _find_kaggle_root(path) is not None:
        return read_kaggle_3m(path)
    if (path / DATA_MASK_CSV).is_file():
        return read_data_mask_csv(path / DATA_MASK_CSV, confine)
    from brainviewer.data.coco import find_coco_json, read_coco  # the COCO reader builds on this module

    coco = find_coco_json(path)
    if coco is not None:
        return read_coco(coco)
    raise DatasetError(f"{path} is not a dataset brainviewer can read. Expected one of: {SUPPORTED_LAYOUTS}.")


def load_arrays(dataset: Dataset, record: SliceRecord) -> tuple[np.ndarray, np.ndarray | None]:
    """``(image, mask)`` for a record, the mask checked against the image's size."""
    image = dataset.load_image(record)
    return image, dataset.load_mask(record, shape=image.shape[:2])
