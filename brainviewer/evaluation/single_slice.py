"""Slices seen alone: how often a tumour-free slice, predicted on its own, shows a tumour, and what a
tumour-present gate at a threshold does to that and to the tumour slices.

Every slice is predicted alone, as the Review page and ``predict`` without ``--volume`` see it (normalised on
its own, no 3-D step), with the weights' threshold and post-processing. :func:`patient_slices` records per
slice what the gate needs; :func:`score_gate` scores a threshold, :func:`choose_threshold` chooses one and
:func:`leave_one_patient_out` gives the honest figure for a threshold chosen on the same patients. Used by
``fit-gate`` and training (:mod:`brainviewer.training.gate_fit`) and by ``cv-evaluate --single-slice``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainviewer.data.datasets import Dataset

DEFAULT_MAX_FP = 0.025
"""False-positive rate on tumour-free slices, each predicted alone, that the threshold is chosen to reach. Below
the 3% a reviewer accepts, because a threshold chosen to reach a rate on some patients overshoots it on others:
on the previous default LGG model's 13 validation patients, a 3% target gave 3.4% leave-one-patient-out, 2.5%
gave 2.4% (``tumour_gate.json`` of ``weights/lgg-unet-resnet18`` before the cross-validated model replaced it)."""
THRESHOLDS = np.round(np.arange(0.0, 1.0, 0.01), 2)


@dataclass
class PatientSlices:
    """One patient's slices, each predicted alone without a gate.

    Attributes:
        presence: ``(N,)`` float tumour-present probabilities in ``[0, 1]``.
        shown: ``(N,)`` bool, the ungated mask has a pixel.
        has_tumour: ``(N,)`` bool, the ground truth has a pixel.
        overlap, predicted, truth: ``(N,)`` int pixel counts of ``mask & truth``, ``mask`` and ``truth``.
    """

    presence: np.ndarray
    shown: np.ndarray
    has_tumour: np.ndarray
    overlap: np.ndarray
    predicted: np.ndarray
    truth: np.ndarray


def _outcomes(p: PatientSlices, threshold: float | None) -> tuple[int, int, int, int, float]:
    """One patient's ``(false positives, tumour-free slices, tumour slices shown, tumour slices, Dice of the
    stacked single-slice masks)`` with the gate at ``threshold`` (``None``: no gate)."""
    kept = p.shown if threshold is None else p.shown & (p.presence >= threshold)
    total = int(p.truth.sum() + p.predicted[kept].sum())
    dice = 1.0 if total == 0 else 2.0 * float(p.overlap[kept].sum()) / total
    tumour = p.has_tumour
    return int((kept & ~tumour).sum()), int((~tumour).sum()), int((kept & tumour).sum()), int(tumour.sum()), dice


def _pooled(outcomes: list[tuple[int, int, int, int, float]]) -> dict[str, float | int]:
    fp, negatives, shown, positives = (sum(o[i] for o in outcomes) for i in range(4))
    return {
        "fp_rate": fp / max(negatives, 1),
        "fp": fp,
        "tumour_free_slices": negatives,
        "tumour_slices_shown": shown,
        "tumour_slices": positives,
        "mean_dice": float(np.mean([o[4] for o in outcomes])) if outcomes else 0.0,
    }


def score_gate(patients: dict[str, PatientSlices], threshold: float | None) -> dict[str, float | int]:
    """Single-slice outcomes of a gate at ``threshold`` (``None``: no gate) over ``patients``.

    Returns:
        ``fp_rate`` (tumour-free slices with a predicted pixel / tumour-free slices), ``fp``,
        ``tumour_free_slices``, ``tumour_slices_shown``, ``tumour_slices``, and ``mean_dice``: the mean over
        patients of the Dice of their stacked single-slice masks (1 for a patient with neither).
    """
    return _pooled([_outcomes(p, threshold) for p in patients.values()])


def score_thresholds(patients: dict[str, PatientSlices], thresholds: dict[str, float | None]) -> dict[str, float | int]:
    """As :func:`score_gate`, each patient gated at its own threshold (``thresholds[patient]``; ``None``: no
    gate), e.g. the one its cross-validation fold chose, or the one chosen without it."""
    return _pooled([_outcomes(s, thresholds[pid]) for pid, s in patients.items()])


def choose_threshold(patients: dict[str, PatientSlices], max_fp: float = DEFAULT_MAX_FP) -> float | None:
    """The smallest threshold at which the false-positive rate over ``patients`` is at most ``max_fp``;
    ``None`` when no gate is needed (the ungated rate already is), the one with the lowest rate when none
    reaches it."""
    if score_gate(patients, None)["fp_rate"] <= max_fp:
        return None
    rates = [score_gate(patients, float(t))["fp_rate"] for t in THRESHOLDS]
    reaching = [float(t) for t, rate in zip(THRESHOLDS, rates, strict=True) if rate <= max_fp]
    return reaching[0] if reaching else float(THRESHOLDS[int(np.argmin(rates))])


def leave_one_patient_out(patients: dict[str, PatientSlices], max_fp: float = DEFAULT_MAX_FP) -> dict:
    """The gate's honest single-slice figures (as :func:`score_gate`, plus ``thresholds``): each patient scored
    with the threshold chosen on the others."""
    thresholds = [choose_threshold({q: s for q, s in patients.items() if q != pid}, max_fp) for pid in patients]
    outcomes = [_outcomes(p, t) for p, t in zip(patients.values(), thresholds, strict=True)]
    return {**_pooled(outcomes), "thresholds": thresholds}


def patient_slices(
    segmenter: object, dataset: Dataset, patient_ids: list[str], batch_size: int = 8, need_head: bool = True
) -> dict[str, PatientSlices]:
    """:class:`PatientSlices` of each patient, every slice predicted alone (as the Review page and ``predict``
    without ``--volume`` do), with the weights' threshold and post-processing and no gate.

    Args:
        segmenter: a Segmenter (or ONNX one).
        dataset: holds ``patient_ids``.
        need_head: refuse a model without a tumour-present head; otherwise its ``presence`` is NaN, which
            only the ungated figures (``threshold=None``) may use.
    """
    out: dict[str, PatientSlices] = {}
    for pid in patient_ids:
        records = dataset.patients[pid]
        images = [dataset.load_image(r) for r in records]
        probs, presence = segmenter.predict_slices(images, batch_size)  # type: ignore[attr-defined]
        if need_head and any(v is None for v in presence):
            raise ValueError("The model has no tumour-present head; fit one with python -m brainviewer fit-gate.")
        presence = [np.nan if v is None else v for v in presence]
        masks = [segmenter.mask_from_probs(p) for p in probs]  # type: ignore[attr-defined]
        truths = [dataset.load_mask(r, image.shape[:2]) for r, image in zip(records, images, strict=True)]
        truths = [np.zeros(m.shape, bool) if t is None else t for t, m in zip(truths, masks, strict=True)]
        out[pid] = PatientSlices(
            presence=np.asarray(presence, dtype=np.float64),
            shown=np.array([m.any() for m in masks]),
            has_tumour=np.array([t.any() for t in truths]),
            overlap=np.array([int((m & t).sum()) for m, t in zip(masks, truths, strict=True)]),
            predicted=np.array([int(m.sum()) for m in masks]),
            truth=np.array([int(t.sum()) for t in truths]),
        )
    return out
