"""Deterministic train/validation splits by patient (never by slice)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from brainviewer.data.io import natural_key

if TYPE_CHECKING:
    from brainviewer.training.config import TrainConfig


SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class Split:
    """Patient ids on each side of a split."""

    train: list[str]
    val: list[str]
    mode: str
    seed: int
    folds: int = 0
    """Number of cross-validation folds the patients were cut into (0: a single split)."""
    fold: int = 0
    """With ``folds``: the held-out fold, 0-based."""
    source: str = ""
    """The saved split this one reuses (``split_file`` of the run), if any."""
    base_train: list[str] = field(default_factory=list)
    """Patients the base model (and its own bases) was trained on, when this split is a fine-tune's:
    the fine-tuned weights have seen them too, so they count as trained on wherever they turn up."""

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Split:
        return cls(**json.loads(Path(path).read_text()))

    def side_of(self, patient_id: str) -> str | None:
        """``"train"`` for a patient the weights have seen (here or through their base model), ``"val"``
        for a held-out one, ``None`` for one not in the split."""
        if patient_id in self.train or patient_id in self.base_train:
            return "train"
        if patient_id in self.val:
            return "val"
        return None

    @property
    def seen(self) -> set[str]:
        """Every patient the weights were trained on: :attr:`train` and :attr:`base_train`."""
        return {*self.train, *self.base_train}


def patient_of_file(file_name: str, split: Split) -> str | None:
    """The patient of ``split`` a slice file belongs to, going by its name, or ``None``.

    A file belongs to patient ``P`` when its stem is ``P`` (one image per patient, as in the
    figshare set) or ``P_<number>`` (a slice of ``P``, as in ``kaggle_3m``).
    """
    stem = Path(file_name).stem
    for candidate in (stem, re.sub(r"_\d+$", "", stem)):
        if split.side_of(candidate) is not None:
            return candidate
    return None


def weights_split(folder: str | Path) -> Split | None:
    """The patient split a weights folder was trained with (its ``split.json``), or ``None``.

    A missing or unreadable file gives ``None``: weights from elsewhere need not have one.
    """
    try:
        return Split.load(Path(folder) / SPLIT_FILE)
    except (OSError, ValueError, TypeError):
        return None


def load_split_file(path: str | Path) -> Split:
    """The split saved at ``path``: a ``split.json``, or a weights or run folder holding one.

    Raises:
        ValueError: no such file, or not a brainviewer split.
    """
    path = Path(path)
    file = path / SPLIT_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(f"no split file at {path}: give a split.json, or a weights or run folder that has one")
    try:
        split = Split.load(file)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{file} is not a brainviewer split.json (lists 'train' and 'val'): {err}") from None
    if not isinstance(split.train, list) or not isinstance(split.val, list):
        raise ValueError(f"{file} is not a brainviewer split.json: 'train' and 'val' must be lists of patient ids")
    return split


def reuse_split(
    patient_ids: list[str],
    saved: Split,
    source: str = "",
    val_fraction: float = 0.15,
    val_count: int = 0,
    mode: str = "random",
    seed: int = 42,
    blocks: int = 1,
) -> Split:
    """A split of ``patient_ids`` that keeps the side ``saved`` gives each patient it lists.

    The patients ``saved`` does not list are split by the other arguments as in
    :func:`split_patients` (a lone one goes to training). So fine-tuning a model on its own
    dataset with its own split never validates on a patient the model was trained on. When
    ``saved`` lists none of the patients, the result is exactly :func:`split_patients`'s, with
    an empty ``source``.

    Raises:
        ValueError: duplicate ids, or no validation patient at all.
    """
    ids = sorted(patient_ids, key=natural_key)
    if len(set(ids)) != len(ids):
        raise ValueError("patient ids must be unique")
    saved_val, saved_train = set(saved.val), saved.seen  # patients its weights saw through their base stay seen
    val = [p for p in ids if p in saved_val]
    new = [p for p in ids if p not in saved_val and p not in saved_train]
    if len(new) == len(ids):  # another dataset (e.g. fine-tuning an LGG model on figshare): nothing to keep
        return split_patients(ids, val_fraction, val_count, mode, seed, blocks)
    if len(new) >= 2:
        val += split_patients(new, val_fraction, val_count, mode, seed, blocks).val
    if not val:
        raise ValueError(
            f"the saved split{f' ({source})' if source else ''} holds out none of the dataset's {len(ids)} patients "
            "and too few others are left to draw a validation set; draw a new split instead"
        )
    val_set = set(val)
    val = [p for p in ids if p in val_set]
    return Split(train=[p for p in ids if p not in val_set], val=val, mode=saved.mode, seed=saved.seed, source=source)


def base_trained_val(split: Split, base: Split | None) -> list[str]:
    """Validation patients of ``split`` that a base model with split ``base`` was trained on.

    Fine-tuned weights scored on such patients look better than they are; the trainer warns about
    them and the model card names them.
    """
    if base is None:
        return []
    trained = base.seen
    return [p for p in split.val if p in trained]


def with_base_train(split: Split, base: Split | None) -> Split:
    """``split`` recording in :attr:`Split.base_train` the patients ``base`` (a fine-tune's base model's
    split) and its own bases were trained on that ``split`` does not train on itself."""
    if base is None:
        return split
    own = set(split.train)
    inherited = sorted((p for p in base.seen if p not in own), key=natural_key)
    return replace(split, base_train=inherited)


def split_patients(
    patient_ids: list[str],
    val_fraction: float = 0.15,
    val_count: int = 0,
    mode: str = "random",
    seed: int = 42,
    blocks: int = 1,
    folds: int = 0,
    fold: int = 0,
) -> Split:
    """Split patients into train and validation sets.

    Args:
        patient_ids: unique patient ids (order does not matter: they are sorted first).
        val_fraction: share of patients for validation when ``val_count`` is 0.
        val_count: exact number of validation patients, if > 0.
        mode: ``random`` (seeded permutation) or ``contiguous`` (the last ids in natural
            order, for datasets whose neighbouring ids are the same patient).
        seed: seed of the permutation.
        blocks: with ``contiguous``, cut the ordered ids into this many equal runs and hold
            out the tail of each (e.g. 3 for a dataset numbered in three tumour-type ranges),
            so every range is represented on both sides while neighbours stay together.
        folds: cross-validation: cut the patients into this many folds and hold out fold ``fold``
            (``val_fraction`` and ``val_count`` are then ignored). ``random`` folds are equal runs of
            the seeded permutation; ``contiguous`` folds are equal runs of each id range, so the folds
            of one ``seed`` / ``blocks`` partition the patients and each is validated on exactly once.
        fold: the held-out fold, ``0 <= fold < folds``.

    Returns:
        A :class:`Split`; the same inputs always give the same split.

    Raises:
        ValueError: duplicate ids, fewer than two patients, an impossible size or an unknown mode.
    """
    ids = sorted(patient_ids, key=natural_key)
    if len(set(ids)) != len(ids):
        raise ValueError("patient ids must be unique")
    if len(ids) < 2:
        raise ValueError(f"need at least two patients to split, got {len(ids)}")
    if blocks < 1 or blocks > len(ids):
        raise ValueError(f"blocks must be between 1 and the number of patients ({len(ids)}), got {blocks}")
    if mode not in ("random", "contiguous"):
        raise ValueError(f"mode must be 'random' or 'contiguous', got {mode!r}")
    if folds:
        return _fold_split(ids, mode, seed, blocks, folds, fold)
    if val_count < 0:
        raise ValueError(f"val_count must be 0 (use val_fraction) or positive, got {val_count}")
    if val_count == 0 and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = val_count if val_count > 0 else max(1, round(len(ids) * val_fraction))
    if n_val >= len(ids):
        raise ValueError(f"cannot hold out {n_val} of {len(ids)} patients; leave at least one for training")
    if mode == "contiguous":
        chunks = np.array_split(np.arange(len(ids)), blocks)
        shares = np.array_split(np.arange(n_val), blocks)  # how many to hold out of each chunk
        val = []
        for chunk, share in zip(chunks, shares, strict=True):
            if len(share) >= len(chunk):
                raise ValueError(f"cannot hold out {len(share)} of a block of {len(chunk)} patients; use fewer blocks")
            val.extend(ids[i] for i in chunk[len(chunk) - len(share) :])
    else:
        order = np.random.default_rng(seed).permutation(len(ids))
        val = sorted((ids[i] for i in order[:n_val]), key=natural_key)
    val_set = set(val)
    return Split(train=[p for p in ids if p not in val_set], val=val, mode=mode, seed=seed)


def _fold_split(ids: list[str], mode: str, seed: int, blocks: int, folds: int, fold: int) -> Split:
    """Fold ``fold`` of ``folds`` held out (see :func:`split_patients`); ``ids`` sorted and unique."""
    if folds < 2:
        raise ValueError(f"folds must be 0 (a single split) or at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be between 0 and folds - 1 ({folds - 1}), got {fold}")
    if mode == "contiguous":
        chunks = np.array_split(np.arange(len(ids)), blocks)
        if min(len(c) for c in chunks) < folds:
            raise ValueError(
                f"an id range of {min(len(c) for c in chunks)} patients cannot be cut into {folds} folds; "
                "use fewer folds or fewer blocks"
            )
        val = [ids[i] for chunk in chunks for i in np.array_split(chunk, folds)[fold]]
    else:
        if len(ids) < folds:
            raise ValueError(f"cannot cut {len(ids)} patients into {folds} folds; use fewer folds")
        order = np.random.default_rng(seed).permutation(len(ids))
        val = sorted((ids[i] for i in np.array_split(order, folds)[fold]), key=natural_key)
    val_set = set(val)
    return Split(train=[p for p in ids if p not in val_set], val=val, mode=mode, seed=seed, folds=folds, fold=fold)


def split_for_config(patient_ids: list[str], config: TrainConfig) -> Split:
    """The split a training run with ``config`` uses (the one call the trainer and the app share).

    A fine-tune's split also records the patients its base model was trained on (:attr:`Split.base_train`).
    """
    base = weights_split(config.init_weights) if config.init_weights else None
    return with_base_train(_own_split(patient_ids, config), base)


def _own_split(patient_ids: list[str], config: TrainConfig) -> Split:
    if config.split_file:
        return reuse_split(
            patient_ids,
            load_split_file(config.split_file),
            config.split_file,
            config.val_fraction,
            config.val_patients,
            config.split_mode,
            config.seed,
            config.split_blocks,
        )
    return split_patients(
        patient_ids,
        config.val_fraction,
        config.val_patients,
        config.split_mode,
        config.seed,
        config.split_blocks,
        config.cv_folds,
        config.cv_fold,
    )
