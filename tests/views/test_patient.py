"""Whole-patient inference, patient summaries, montage/GIF and slice-level dataset evaluation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainviewer.data.datasets import open_dataset
from brainviewer.data.volumes import Volume, volume_from_dataset
from brainviewer.evaluation.evaluate import evaluate_probs
from brainviewer.model.segmenter import Segmenter
from brainviewer.views.dataset_evaluation import detection_curve, evaluate_dataset
from brainviewer.views.overlay import GT_COLOR, PRED_COLOR
from brainviewer.views.patient import (
    model_inputs,
    montage,
    predict_volume,
    predicted_masks,
    summarise_patient,
    tumour_gif,
)


class CountingSegmenter:
    """Stands in for a Segmenter: records each batch and returns probs = image / 255 (channel 0)."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict_probs_batch(self, images: list[np.ndarray], batch_size: int = 8) -> list[np.ndarray]:
        self.batches.append(len(images))
        return [
            np.asarray(img, dtype=np.float32).reshape(img.shape[0], img.shape[1], -1)[..., 0] / 255 for img in images
        ]


def gray_volume(n: int = 10, shape: tuple[int, int] = (12, 16)) -> Volume:
    slices = [np.full(shape, 10 * k, np.uint8) for k in range(n)]
    return Volume("vol", slices)


def test_predict_volume_batches_and_progress() -> None:
    segmenter = CountingSegmenter()
    seen: list[tuple[int, int]] = []
    probs = predict_volume(segmenter, gray_volume(10), batch_size=4, progress=lambda d, t: seen.append((d, t)))
    assert segmenter.batches == [4, 4, 2]
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert len(probs) == 10
    assert probs[3].shape == (12, 16) and probs[3].dtype == np.float32
    assert float(probs[3][0, 0]) == pytest.approx(30 / 255)
    with pytest.raises(ValueError, match="batch_size"):
        predict_volume(segmenter, gray_volume(2), batch_size=0)


def test_predict_volume_with_a_real_model_uses_batches(tiny_weights: Path) -> None:
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    calls: list[int] = []
    handle = segmenter.model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        volume = Volume("v", [np.random.default_rng(k).integers(0, 255, (40, 56, 3), dtype=np.uint8) for k in range(7)])
        probs = predict_volume(segmenter, volume, batch_size=3)
    finally:
        handle.remove()
    assert calls == [3, 3, 1]
    assert len(probs) == 7
    assert all(p.shape == (40, 56) and p.dtype == np.float32 for p in probs)
    assert all(float(p.min()) >= 0.0 and float(p.max()) <= 1.0 for p in probs)


def test_model_inputs_window_scanner_volumes_only() -> None:
    slices = [np.full((8, 8), 100.0, np.float32), np.linspace(0, 1000, 64, dtype=np.float32).reshape(8, 8)]
    nifti = Volume("n", slices, source_kind="nifti")
    images = model_inputs(nifti)
    assert all(img.dtype == np.uint8 for img in images)
    np.testing.assert_array_equal(images[1], nifti.display_image(1))
    dataset_like = Volume("d", slices, source_kind="kaggle_3m")
    assert model_inputs(dataset_like)[1] is slices[1]


def _hand_volume() -> tuple[Volume, list[np.ndarray]]:
    truth = [np.zeros((4, 4), bool) for _ in range(3)]
    truth[1][1:3, 1:3] = True  # 4 px
    truth[2][0, 0:2] = True  # 2 px
    pred = [np.zeros((4, 4), bool) for _ in range(3)]
    pred[0][3, 3] = True  # 1 px false positive
    pred[1][1:3, 1:3] = True  # exact
    volume = Volume("hand", [np.zeros((4, 4), np.uint8)] * 3, masks=truth, spacing_mm=(0.5, 0.5, 2.0))
    return volume, pred


def test_summary_hand_computed() -> None:
    volume, pred = _hand_volume()
    summary = summarise_patient(volume, pred, threshold=0.5)
    assert summary.slice_dice == [0.0, 1.0, 0.0]
    assert summary.truth_area_px == [0, 4, 2]
    assert summary.pred_area_px == [1, 4, 0]
    assert summary.gt_tumour_slices == [1, 2]
    assert summary.pred_tumour_slices == [0, 1]
    assert summary.tumour_slices == [0, 1, 2]
    assert summary.gt_voxels == 6 and summary.pred_voxels == 5
    assert summary.volume_dice == pytest.approx(8 / 11)  # tp 4, fp 1, fn 2
    assert summary.tumour_slice_dice == pytest.approx(0.5)
    assert summary.voxel_mm3 == pytest.approx(0.5)
    assert summary.gt_volume_mm3 == pytest.approx(3.0)
    assert summary.pred_volume_mm3 == pytest.approx(2.5)
    assert summary.largest_gt_slice == 1 and summary.largest_pred_slice == 1
    assert summary.key_slices == [1]
    row = summary.slice_rows()[2]
    assert row == {
        "slice": 3,
        "truth_area_px": 2,
        "pred_area_px": 0,
        "dice": 0.0,
        "max_prob": None,
        "truth_tumour": True,
        "pred_tumour": False,
    }
    assert summary.as_dict()["gt_tumour_slices"] == 2


def test_summary_without_truth_or_spacing() -> None:
    volume = Volume("nogt", [np.zeros((4, 4), np.uint8)] * 2)
    pred = [np.ones((4, 4), bool), np.zeros((4, 4), bool)]
    probs = [np.full((4, 4), 0.8, np.float32), np.full((4, 4), 0.1, np.float32)]
    summary = summarise_patient(volume, pred, probs)
    assert summary.slice_dice == [None, None]
    assert summary.gt_voxels is None and summary.volume_dice is None and summary.tumour_slice_dice is None
    assert summary.pred_voxels == 16 and summary.pred_volume_mm3 is None
    assert summary.max_prob == pytest.approx([0.8, 0.1])
    assert summary.key_slices == [0]
    with pytest.raises(ValueError, match="2 slices"):
        summarise_patient(volume, pred[:1])


def test_predicted_masks_threshold_and_small_components() -> None:
    probs = np.zeros((10, 10), np.float32)
    probs[0, 0] = 0.9  # 1-px component
    probs[4:8, 4:8] = 0.6  # 16-px component
    (kept,) = predicted_masks([probs], threshold=0.5)
    assert int(kept.sum()) == 17
    (cleaned,) = predicted_masks([probs], threshold=0.5, min_component_px=4)
    assert int(cleaned.sum()) == 16 and not cleaned[0, 0]
    (high,) = predicted_masks([probs], threshold=0.7)
    assert int(high.sum()) == 1
    with pytest.raises(ValueError, match="threshold"):
        predicted_masks([probs], threshold=1.0)


def test_montage_layout_and_colours() -> None:
    images = [np.full((20, 20), 60, np.uint8) for _ in range(5)]
    truth = np.zeros((20, 20), bool)
    truth[2:18, 2:10] = True
    pred = np.zeros((20, 20), bool)
    pred[2:18, 12:18] = True
    picture = montage(images, [truth] * 5, [pred] * 5, labels=[str(i) for i in range(5)], tile=40, gap=2)
    assert picture.shape == (2 * 42 - 2, 3 * 42 - 2, 3) and picture.dtype == np.uint8
    first = picture[:40, :40].astype(int)
    # the truth outline is pure red, the prediction outline pure green (tile scaled 2x)
    assert tuple(first[4 * 2 + 10, 2 * 2]) == GT_COLOR
    assert tuple(first[4 * 2 + 10, 17 * 2 + 1]) == PRED_COLOR
    assert (picture[:, 40:42] == 255).all()  # white gap between tiles
    assert (picture[42:, 42 * 2 :] == 255).all()  # the sixth cell stays empty
    with pytest.raises(ValueError, match="at least one"):
        montage([], [])
    with pytest.raises(ValueError, match="1 masks for 5 images"):
        montage(images, [truth])


def test_tumour_gif_frames() -> None:
    images = [np.full((16, 16), 40 * k, np.uint8) for k in range(3)]
    data = tumour_gif(images, [np.eye(16, dtype=bool)] * 3, size=32)
    gif = Image.open(io.BytesIO(data))
    assert gif.format == "GIF" and gif.n_frames == 3 and gif.size == (32, 32)


def test_detection_curve_hand_computed() -> None:
    curve = detection_curve([0.9, 0.6, 0.3, 0.1], [True, False, True, False], thresholds=[0.2, 0.5, 0.95])
    assert [(c["tp"], c["fp"], c["fn"], c["tn"]) for c in curve] == [(2, 1, 0, 1), (1, 1, 1, 1), (0, 0, 2, 2)]
    assert curve[0]["precision"] == pytest.approx(2 / 3) and curve[0]["recall"] == 1.0
    assert curve[1]["precision"] == 0.5 and curve[1]["recall"] == 0.5
    assert curve[2]["precision"] == 1.0 and curve[2]["recall"] == 0.0  # nothing predicted
    assert len(detection_curve([0.5], [True])) == 19  # default sweep 0.05 .. 0.95


def test_evaluate_dataset_keeps_slice_scores(phantom_dataset: Path) -> None:
    dataset = open_dataset(phantom_dataset).subset(["PHANTOM_00_20000101", "PHANTOM_01_20000101"])
    truth_by_image = {}
    for record in dataset:
        truth_by_image[dataset.load_image(record).tobytes()] = dataset.load_mask(record)
    first_record = dataset.patients["PHANTOM_00_20000101"][0]
    false_positive_key = dataset.load_image(first_record).tobytes()

    def probs_fn(scans: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for scan in scans:
            probs = truth_by_image[scan.tobytes()].astype(np.float32) * 0.9
            if scan.tobytes() == false_positive_key:
                probs[0:2, 0:2] = 0.7  # 4-px false positive on slice 1 of patient 0 (no tumour there)
            out.append(probs)
        return out

    result = evaluate_dataset(dataset, probs_fn, threshold=0.5)
    reference = evaluate_probs(dataset, probs_fn, [(0.5, 0, False)])[0]
    assert result.report.summary() == reference.summary()
    assert len(result.slices) == 16
    first = result.slices[0]
    assert (first.patient_id, first.slice, first.truth_area_px, first.pred_area_px) == ("PHANTOM_00_20000101", 1, 0, 4)
    assert first.dice == 0.0 and first.max_prob == pytest.approx(0.9 * 0 + 0.7)
    tumour = [s for s in result.slices if s.truth_area_px]
    assert tumour and all(s.dice == 1.0 and s.pred_area_px == s.truth_area_px for s in tumour)
    assert result.worst_slices(1)[0] == first
    assert result.worst_patients(1)[0].patient_id == "PHANTOM_00_20000101"
    curve = {c["threshold"]: c for c in result.detection([0.5, 0.8])}
    assert curve[0.5]["tp"] == len(tumour) and curve[0.5]["fp"] == 1
    assert curve[0.8]["fp"] == 0 and curve[0.8]["recall"] == 1.0
    # the per-slice rows are plain dicts for CSV export
    assert result.slice_rows()[0]["name"] == "PHANTOM_00_20000101_1.png"


def test_volume_from_dataset_then_predict_and_summarise(phantom_dataset: Path) -> None:
    dataset = open_dataset(phantom_dataset)
    volume = volume_from_dataset(dataset, dataset.patient_ids[0])
    probs = [m.astype(np.float32) for m in volume.masks]  # perfect "model"
    summary = summarise_patient(volume, predicted_masks(probs, 0.5), probs, threshold=0.5)
    assert summary.volume_dice == 1.0
    assert summary.gt_tumour_slices == summary.pred_tumour_slices
    assert summary.gt_tumour_slices == [2, 3, 4, 5]  # phantom: middle half of 8 slices (positions 0.25..0.75)


def test_merge_patient_by_patient_equals_one_pass(phantom_dataset: Path) -> None:
    from brainviewer.views.dataset_evaluation import merge_evaluations

    dataset = open_dataset(phantom_dataset)

    def probs_fn(scans: list[np.ndarray]) -> list[np.ndarray]:
        """A crude "model": FLAIR much brighter than pre-contrast is tumour, plus a false blob on
        about half of the slices (those whose pixel sum is even)."""
        out = []
        for scan in scans:
            probs = np.clip((scan[..., 1].astype(np.float32) - scan[..., 0] - 30) / 40, 0, 1)
            if int(scan.sum()) % 2 == 0:
                probs[:5, :5] = 0.9
            out.append(probs)
        return out

    whole = evaluate_dataset(dataset, probs_fn, threshold=0.5, min_component_px=4)
    parts = [evaluate_dataset(dataset.subset([pid]), probs_fn, 0.5, 4) for pid in dataset.patient_ids]
    merged = merge_evaluations(parts)
    assert 0.0 < whole.report.micro_dice < 1.0  # a non-trivial case
    assert 0 < whole.report.fp_slices < whole.report.empty_slices
    for key, value in whole.report.summary().items():
        assert merged.report.summary()[key] == pytest.approx(value), key
    assert merged.slices == whole.slices
    with pytest.raises(ValueError, match="different settings"):
        merge_evaluations([parts[0], evaluate_dataset(dataset.subset([dataset.patient_ids[1]]), probs_fn, 0.6, 4)])
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_evaluations([])


def test_predicted_masks_largest_3d_component() -> None:
    from brainviewer.views.patient import predicted_masks

    probs = np.zeros((3, 16, 16), dtype=np.float32)
    probs[0:2, 2:6, 2:6] = 0.9  # a lesion on slices 1-2: 32 voxels
    probs[2, 12:14, 12:14] = 0.8  # a stray 4 px blob on slice 3
    assert [m.sum() for m in predicted_masks(list(probs), 0.5)] == [16, 16, 4]
    assert [m.sum() for m in predicted_masks(list(probs), 0.5, volume_keep_largest=True)] == [16, 16, 0]


def test_outlined_shows_a_three_channel_scan_as_flair_in_grayscale() -> None:
    from brainviewer.views.patient import outlined

    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 200, 90  # pre-contrast, FLAIR, post-contrast
    image[0, 0] = (0, 0, 0)  # an intensity range, so FLAIR shows as a gray level, not a flat picture
    picture = outlined(image, None, None)
    assert (picture[..., 0] == picture[..., 1]).all() and (picture[..., 1] == picture[..., 2]).all()
    assert not (outlined(image, None, None, channel=None)[5, 5] == picture[5, 5]).all()  # the RGB composite


def test_volume_step_note_says_when_the_3d_step_removed_pixels_on_a_slice() -> None:
    from brainviewer.views.patient import volume_step_note

    probs = [np.zeros((12, 12), np.float32) for _ in range(3)]
    probs[0][1:5, 1:5] = 0.9  # a 16 px blob on slice 0 only
    for p in probs:
        p[6:11, 6:11] = 0.9  # a 25 px blob through all three slices: the largest 3-D component
    masks = predicted_masks(probs, 0.5, volume_keep_largest=True)
    assert volume_step_note(probs[0], masks[0], 0.5) == (
        "Predicted: 25 px after keeping the largest 3-D component (41 px before)"
    )
    assert volume_step_note(probs[1], masks[1], 0.5) is None  # nothing removed on this slice
    plain = predicted_masks(probs, 0.5)
    assert volume_step_note(probs[0], plain[0], 0.5) is None
