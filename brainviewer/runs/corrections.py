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

from dataclasses import replace
from pathlib import Path

from brainviewer.data.corrections import MIX_INFO_FILE, latest_corrections, write_training_index
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
            on: mix them with a dataset); or a dataset that cannot be mixed (COCO polygons).
    """
    settings = settings or TrainConfig()
    if dataset_path is not None and not str(dataset_path).strip():
        dataset_path = None
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


def corrections_run_info(config: TrainConfig) -> dict | None:
    """``{"corrections", "dataset", "corrected_patients"}`` of a run trained on corrections (``dataset`` is
    ``None`` for corrections alone), or ``None`` for any other run."""
    info = read_json_object(Path(config.data).parent / MIX_INFO_FILE)
    return info if info.get("corrections") else None


def describe(info: dict) -> str:
    """One line for people: what a corrections run learned from."""
    patients = info.get("corrected_patients") or []
    mixed = f", mixed with {info['dataset']}" if info.get("dataset") else " alone"
    return f"corrections of {len(patients)} patient(s) from {info['corrections']}{mixed}"
