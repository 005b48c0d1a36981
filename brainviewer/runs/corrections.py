"""Training runs that learn from the corrections dataset (:mod:`brainviewer.data.corrections`).

:func:`corrections_config` writes the index a run trains on (the corrections alone, or mixed with a dataset)
and returns the run's :class:`~brainviewer.training.config.TrainConfig`; the run itself is started like any
other (:func:`brainviewer.runs.start_run`: its own process, never the Streamlit thread). Splits stay by
patient: corrections alone are split among the corrected patients; mixed with a dataset, every corrected
patient trains and the dataset's other patients keep the side the base model's ``split.json`` gave them.

:func:`corrections_run_info` reads back, from a run's configuration, which corrections and dataset it
learned from, for the comparison buttons of the Fine-tuning page.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from brainviewer.data.corrections import MIX_INFO_FILE, MIXES_FOLDER, latest_corrections, write_training_index
from brainviewer.data.split import weights_split
from brainviewer.files import read_json_object
from brainviewer.training.config import TrainConfig


def corrections_config(
    root: str | Path,
    base_weights: str,
    dataset_path: str | Path | None = None,
    settings: TrainConfig | None = None,
) -> TrainConfig:
    """The configuration of a run on the corrections at ``root`` (writes its index under ``root/.mixes``).

    Args:
        root: the corrections folder.
        base_weights: the weights folder to fine-tune (its ``split.json``, when present, keeps the dataset's
            patients on their side), or ``""`` to train from scratch.
        dataset_path: a dataset to mix the corrections with, or ``None`` for the corrections alone.
        settings: the other settings (epochs, learning rate, device ...); ``data``, ``split_file`` and
            ``init_weights`` are set here.

    Raises:
        ValueError: no corrections yet; corrections alone from fewer than two patients (nothing to validate
            on: mix them with a dataset); a dataset that is the corrections folder itself (or inside it); or a
            dataset that cannot be mixed (COCO polygons). Nothing is written then.
    """
    settings = settings or TrainConfig()
    if dataset_path is not None and not str(dataset_path).strip():
        dataset_path = None
    if dataset_path is not None and _inside(dataset_path, root):
        raise ValueError(
            f"the dataset to mix in, {dataset_path}, is the corrections folder itself: mix the corrections with "
            "another dataset (e.g. the one the base model trained on), or train on the corrections alone"
        )
    base = weights_split(base_weights) if base_weights else None
    if dataset_path is None:
        patients = {r.patient_id for r in latest_corrections(root)}
        if len(patients) == 1:
            raise ValueError(
                "the corrections hold one patient, and a run needs at least two to keep one for validation; "
                "mix them with a dataset, or correct slices of another patient"
            )
    index = write_training_index(root, dataset_path, base)
    return replace(
        settings,
        data=str(index.csv),
        split_file=str(index.split_file or ""),
        init_weights=base_weights,
        cv_folds=0,
        cv_fold=0,
    )


def _inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    path, folder = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return path == folder or folder in path.parents


def discard_mix(config: TrainConfig, root: str | Path) -> None:
    """Remove the index folder :func:`corrections_config` wrote for ``config`` (when the run could not start);
    only a folder under ``root/.mixes``."""
    folder = Path(config.data).parent
    if config.data and folder.is_dir() and folder.resolve().parent == (Path(root) / MIXES_FOLDER).resolve():
        shutil.rmtree(folder, ignore_errors=True)


def base_training_dataset(weights: str | Path) -> str:
    """The dataset folder a weights folder was trained on, as its records name it (``train_config.json``'s
    ``data``, else ``average.json``'s), when that folder exists; else ``""`` (unknown, or an index file such as a
    corrections mix)."""
    from brainviewer.model.hub_card import folder_records

    if not weights or not Path(weights).is_dir():
        return ""
    found = [folder_records(weights).dataset_path, read_json_object(Path(weights) / "average.json").get("data")]
    for path in found:
        if path and Path(path).expanduser().is_dir():
            return str(Path(path).expanduser())
    return ""


def corrections_run_info(config: TrainConfig) -> dict | None:
    """``{"corrections", "dataset", "corrected_patients"}`` of a run trained on corrections (``dataset`` is
    ``None`` for corrections alone), or ``None`` for any other run."""
    info = read_json_object(Path(config.data).parent / MIX_INFO_FILE)
    return info if info.get("corrections") else None


def describe(info: dict) -> str:
    """One line for people: what a corrections run learned from."""
    patients = info.get("corrected_patients") or []
    mixed = f", mixed with {info['dataset']}" if info.get("dataset") else " alone"
    return f"corrections of {plural(len(patients), 'patient')} from {info['corrections']}{mixed}"


def plural(n: int, noun: str) -> str:
    """``1 patient``, ``2 patients``, ``1,024 slices``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
