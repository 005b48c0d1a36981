"""Dataset patients: one patient of a 2-D slice dataset (PNG/TIFF, ...) as a volume."""

from __future__ import annotations

from pathlib import Path

from brainviewer.data.datasets import Dataset
from brainviewer.data.volumes.base import Volume


def dataset_base(dataset: Dataset) -> Path:
    """The folder a dataset's relative paths start from (its root, or the folder of its CSV/JSON)."""
    root = Path(dataset.root)
    return root if root.is_dir() else root.parent


def volume_from_dataset(
    dataset: Dataset, patient_id: str, spacing_mm: tuple[float, float, float] | None = None
) -> Volume:
    """One patient of a 2-D slice dataset as a :class:`Volume`.

    Args:
        dataset: an open dataset.
        patient_id: one of ``dataset.patient_ids``.
        spacing_mm: ``(row, col, slice)`` when known (PNG/TIFF files do not record it).

    Raises:
        KeyError: unknown patient (the message lists a few that exist).
        VolumeError: slices of different sizes.
    """
    records = dataset.patients.get(patient_id)
    if records is None:
        known = ", ".join(dataset.patient_ids[:5])
        raise KeyError(f"patient {patient_id!r} is not in {dataset.root} (e.g. {known}).")
    base = dataset_base(dataset)
    slices, masks, paths = [], [], []
    for record in records:
        image = dataset.load_image(record)
        slices.append(image)
        masks.append(dataset.load_mask(record, shape=image.shape[:2]))
        try:
            paths.append(record.image_path.resolve().relative_to(base.resolve()).as_posix())
        except ValueError:
            paths.append(record.image_path.name)
    height, width = slices[0].shape[:2]
    return Volume(
        patient_id=patient_id,
        slices=slices,
        masks=masks if any(m is not None for m in masks) else None,
        spacing_mm=spacing_mm,
        source_kind=dataset.kind,
        slice_names=[Path(p).stem for p in paths],
        slice_paths=paths,
        info={"dataset_kind": dataset.kind, "slices": len(slices), "size": f"{width}x{height}"},
    )
