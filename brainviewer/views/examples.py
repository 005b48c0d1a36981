"""Real example scans for a first look: a few figshare T1-CE slices and one small LGG patient, read from
an examples source folder (never copied into the project), with their ground truth and their credits.

No Streamlit here. The source is ``$BRAINVIEWER_EXAMPLES`` when set (``off`` switches examples off);
otherwise the public data beside the project (``../shared/data``) when present, except in a public demo,
where only the operator's setting counts. Without a source the pages fall back to the synthetic phantom.
The folder holds ``figshare/`` (``images/`` + ``masks/`` + ``labels.csv``) and/or ``lgg/kaggle_3m/``::

    root = examples_root(demo=False)
    items = example_items(root) if root else []             # Review: figshare slices + one LGG slice
    dataset = example_patient_dataset(root) if root else None  # Patients: the small LGG patient

Which examples, by a rule fixed in code (the ground truth is never used to pick a flattering one):

* figshare: per tumour type (meningioma, glioma, pituitary; ``labels.csv``), the lowest id held out by the
  shipped figshare model (its ``split.json``; every id when it has none) that is *isolated*, i.e. neither
  neighbouring id is in the folder. Ids are numbered by patient and the dense id blocks are mostly axial,
  so isolated ids come from the sparse every-8th sample that spans all three planes.
* LGG: the patient held out by the shipped default LGG model with the fewest slices (ties: lowest id); on
  Review its slice with the largest ground-truth area (what a dataset patient opens on too).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from brainviewer.data.datasets import Dataset, open_dataset
from brainviewer.data.split import weights_split
from brainviewer.model.weights import PROJECT_ROOT
from brainviewer.views.review import ReviewItem

logger = logging.getLogger(__name__)

EXAMPLES_ENV = "BRAINVIEWER_EXAMPLES"
#: The public data beside the project (``../shared/data``), used when ``$BRAINVIEWER_EXAMPLES`` is unset.
DEFAULT_EXAMPLES = PROJECT_ROOT.parent / "shared" / "data"
#: Values of ``$BRAINVIEWER_EXAMPLES`` that switch the examples off (the phantom is shown instead).
OFF_VALUES = ("", "0", "off", "none", "false", "no")
EXAMPLE_SOURCE = "real example"
"""How an example item's ``source`` begins (the Review page then says whether the model held its patient out)."""
#: The shipped models whose held-out patients the examples are taken from.
FIGSHARE_WEIGHTS = PROJECT_ROOT / "weights" / "figshare-unet-resnet18"
LGG_WEIGHTS = PROJECT_ROOT / "weights" / "lgg-unet-resnet18"

FIGSHARE_CREDIT = (
    "figshare brain tumour dataset, Cheng et al. 2015 (T1-weighted contrast-enhanced; CC BY 4.0), "
    "figshare.com/articles/dataset/brain_tumor_dataset/1512427"
)
LGG_CREDIT = (
    "LGG MRI Segmentation, Buda et al. 2019 (TCGA-LGG, The Cancer Imaging Archive), "
    "kaggle.com/datasets/mateuszbuda/lgg-mri-segmentation"
)


def examples_root(demo: bool, environ: dict[str, str] | None = None) -> Path | None:
    """The examples source folder, or ``None`` when there is none (the pages then show the phantom).

    Args:
        demo: whether the app runs as a public demo: then only ``$BRAINVIEWER_EXAMPLES`` (set by the
            operator) counts, never a default path.
        environ: the environment to read (``os.environ`` by default).
    """
    env = os.environ if environ is None else environ
    raw = env.get(EXAMPLES_ENV)
    if raw is None:
        folder = None if demo else DEFAULT_EXAMPLES
    elif raw.strip().lower() in OFF_VALUES:
        folder = None
    else:
        folder = Path(raw.strip()).expanduser()
    if folder is None or not folder.is_dir():
        if raw and folder is not None:
            logger.warning("%s=%s is not a folder; no real examples are shown", EXAMPLES_ENV, raw)
        return None
    return folder


def _held_out(weights: Path) -> set[str] | None:
    split = weights_split(weights)
    return set(split.val) if split is not None else None


def figshare_example_ids(ids: list[str], labels: dict[str, str], held_out: set[str] | None) -> list[str]:
    """The rule of the module docstring, ids in numeric order: per tumour type, the lowest numeric id in
    ``held_out`` (all when ``None``) whose neighbouring ids are both absent from ``ids``.

    Args:
        ids: every image id in the folder (numeric strings; others are ignored).
        labels: id -> tumour type name.
        held_out: ids the shipped figshare model never trained on, or ``None`` when unknown.
    """
    numbers = {int(i) for i in ids if i.isdigit()}
    chosen: dict[str, str] = {}
    for number in sorted(numbers):
        key = str(number)
        kind = labels.get(key)
        if kind is None or kind in chosen or (held_out is not None and key not in held_out):
            continue
        if number - 1 not in numbers and number + 1 not in numbers:
            chosen[kind] = key
    return sorted(chosen.values(), key=int)


def lgg_example_patient(slice_counts: dict[str, int], held_out: set[str] | None) -> str | None:
    """The held-out patient (all when ``held_out`` is ``None``) with the fewest slices; ties: lowest id."""
    candidates = [p for p in slice_counts if held_out is None or p in held_out]
    return min(candidates, key=lambda p: (slice_counts[p], p), default=None)


def _read_labels(path: Path) -> dict[str, str]:
    """``labels.csv`` (``file,label,label_name``) -> image id -> tumour type name; empty when unreadable."""
    try:
        with path.open(newline="") as handle:
            return {Path(row["file"]).stem: row.get("label_name") or row["label"] for row in csv.DictReader(handle)}
    except (OSError, KeyError, ValueError):
        return {}


def _open(folder: Path) -> Dataset | None:
    if not folder.is_dir():
        return None
    try:
        return open_dataset(folder)
    except Exception as err:  # a broken examples folder only costs the examples
        logger.warning("examples folder %s could not be read: %s", folder, err)
        return None


def example_patient_dataset(root: Path) -> Dataset | None:
    """The LGG example patient (see the module docstring) as a one-patient dataset, or ``None``."""
    dataset = _open(root / "lgg")
    if dataset is None or dataset.kind != "kaggle_3m":
        return None
    counts = {patient: len(records) for patient, records in dataset.patients.items()}
    patient = lgg_example_patient(counts, _held_out(LGG_WEIGHTS))
    return dataset.subset([patient]) if patient else None


def _item(dataset: Dataset, patient: str, index: int, source: str) -> ReviewItem | None:
    record = dataset.patients[patient][index]
    try:
        image = dataset.load_image(record)
        truth = dataset.load_mask(record, shape=image.shape[:2])
    except Exception as err:
        logger.warning("example %s could not be read: %s", record.image_path, err)
        return None
    by_layout = dataset.kind == "kaggle_3m"  # LGG slices repeat FLAIR for a missing sequence
    return ReviewItem(record.name, image, truth=truth, source=source, patient_id=patient, channels_by_layout=by_layout)


def example_items(root: Path) -> list[ReviewItem]:
    """The Review page's real examples: one slice of the LGG example patient (the default model's kind of
    scan, so the first look is a fair one), then the figshare slices.

    Each item carries its ground truth and a source naming the dataset and its credit.
    """
    items: list[ReviewItem] = []
    lgg = example_patient_dataset(root)
    if lgg is not None:
        patient = lgg.patient_ids[0]
        source = f"{EXAMPLE_SOURCE} · LGG MRI Segmentation (Buda et al. 2019, TCGA-LGG), patient {patient}"
        item = _item(lgg, patient, lgg.largest_truth_index(patient), source)
        if item is not None:
            items.append(item)
    figshare = _open(root / "figshare")
    if figshare is not None and figshare.kind == "image_mask_folders":
        labels = _read_labels(Path(figshare.root) / "labels.csv")
        for image_id in figshare_example_ids(figshare.patient_ids, labels, _held_out(FIGSHARE_WEIGHTS)):
            kind = labels.get(image_id, "tumour")
            source = f"{EXAMPLE_SOURCE} · figshare T1-CE, {kind} (Cheng et al. 2015, CC BY 4.0)"
            item = _item(figshare, image_id, 0, source)
            if item is not None:
                items.append(item)
    return items
