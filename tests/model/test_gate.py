"""The tumour-present gate: a head that hides a slice's mask when it says the slice is tumour-free.

A small synthetic model (untrained tiny U-Net, its segmentation bias pushed up so that every slice's ungated
mask is full) gets a head fitted on phantom slices; the gate must then empty the masks of the tumour-free
slices and keep those of the tumour slices, in PyTorch, ONNX, ``predict`` and a saved-and-loaded folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import Split
from brainviewer.evaluation.single_slice import PatientSlices, choose_threshold, leave_one_patient_out, score_gate
from brainviewer.model.gate import attach_head, has_head, split_output, tumour_shown
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.model.segmenter import Segmenter, load_model, save_weights
from brainviewer.training.gate_fit import GATE_FILE, encoder_features, fit_gate, fit_linear_head


def _slices(dataset_root: Path) -> tuple[list[np.ndarray], np.ndarray]:
    dataset = open_dataset(dataset_root)
    images = [dataset.load_image(r) for r in dataset.records]
    return images, np.array([bool(dataset.load_mask(r).any()) for r in dataset.records])


@pytest.fixture(scope="module")
def gated(tiny_weights: Path, phantom_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny weights whose ungated masks are full, with a head fitted on the phantom slices and
    a gate at 0.5."""
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    with torch.no_grad():
        segmenter.model.segmentation_head[0].bias.fill_(20.0)  # every pixel tumour, before the gate
    images, has_tumour = _slices(phantom_dataset)
    w, b = fit_linear_head(encoder_features(segmenter, images), has_tumour)
    attach_head(segmenter.model, w, b)
    prep = Preprocessing(**{**segmenter.prep.__dict__, "tumour_gate": 0.5})
    return save_weights(segmenter.model, tmp_path_factory.mktemp("gated") / "gated", prep)


def test_the_gate_hides_tumour_free_slices_and_keeps_tumour_slices(gated: Path, phantom_dataset: Path) -> None:
    segmenter = Segmenter.from_folder(gated, device="cpu")
    assert has_head(segmenter.model) and segmenter.prep.tumour_gate == 0.5
    images, has_tumour = _slices(phantom_dataset)
    probs, presence = segmenter.predict_slices(images)
    masks = [segmenter.mask_from_probs(p, presence=g) for p, g in zip(probs, presence, strict=True)]
    ungated = [segmenter.mask_from_probs(p) for p in probs]
    assert all(m.all() for m in ungated)  # without the gate every slice shows a (false) tumour
    shown = np.array([m.any() for m in masks])
    assert shown[has_tumour].all(), "a tumour slice lost its mask"
    assert not shown[~has_tumour].any(), "a tumour-free slice kept its mask"
    assert all(m.all() for m, s in zip(masks, shown, strict=True) if s)  # a kept mask is unchanged


def test_old_weights_without_a_head_predict_as_before(tiny_weights: Path, rng: np.random.Generator) -> None:
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    assert not has_head(segmenter.model) and segmenter.prep.tumour_gate is None
    images = [rng.integers(0, 255, (50, 70, 3), dtype=np.uint8) for _ in range(3)]
    probs, presence = segmenter.predict_slices(images)
    assert presence == [None, None, None]
    for p, q in zip(probs, segmenter.predict_probs_batch(images), strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(segmenter.mask_from_probs(probs[0]), probs[0] >= segmenter.prep.threshold)
    assert tumour_shown(None, 0.9) and tumour_shown(0.1, None) and not tumour_shown(0.1, 0.2)


def test_a_saved_head_is_a_plain_smp_aux_params_model(gated: Path) -> None:
    config = json.loads((gated / "config.json").read_text())
    assert config["aux_params"]["classes"] == 1
    model, _ = load_model(gated)
    masks, labels = split_output(model(torch.zeros(2, 3, 64, 64)))
    assert masks.shape == (2, 1, 64, 64) and labels.shape == (2, 1)
    with pytest.raises(ValueError, match="already has"):
        attach_head(model)


def test_flip_tta_averages_the_presence_too(gated: Path, phantom_dataset: Path) -> None:
    segmenter = Segmenter.from_folder(gated, device="cpu")
    images, _ = _slices(phantom_dataset)
    _, plain = segmenter.predict_slices(images[:2])
    mirrored = [np.ascontiguousarray(im[:, ::-1]) for im in images[:2]]
    _, flipped = segmenter.predict_slices(mirrored)
    segmenter.prep.tta_flip = True
    _, both = segmenter.predict_slices(images[:2])
    np.testing.assert_allclose(both, (np.array(plain) + np.array(flipped)) / 2, atol=1e-5)


def test_onnx_gives_the_same_presence_and_gated_masks(gated: Path, phantom_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from brainviewer.model.onnx_backend import OnnxSegmenter, check_against_torch, export_onnx

    path = export_onnx(gated, tmp_path / "gated.onnx")
    assert check_against_torch(gated, path) < 1e-3
    onnx_model = OnnxSegmenter.from_file(path, providers=["CPUExecutionProvider"])
    assert onnx_model.prep.tumour_gate == 0.5
    torch_model = Segmenter.from_folder(gated, device="cpu")
    images, _ = _slices(phantom_dataset)
    want_probs, want = torch_model.predict_slices(images)
    got_probs, got = onnx_model.predict_slices(images)
    np.testing.assert_allclose(got, want, atol=1e-4)
    for p, q, g in zip(got_probs, want_probs, got, strict=True):
        want_mask = torch_model.mask_from_probs(q, None, g)
        np.testing.assert_array_equal(onnx_model.mask_from_probs(p, presence=g), want_mask)


def test_predict_gates_single_slices_but_not_volumes(gated: Path, phantom_dataset: Path, tmp_path: Path) -> None:
    from brainviewer.evaluation.predict import predict_paths

    segmenter = Segmenter.from_folder(gated, device="cpu")
    dataset = open_dataset(phantom_dataset)
    folder = Path(dataset.records[0].image_path).parent
    free = [r for r in dataset.patients[dataset.records[0].patient_id] if not dataset.load_mask(r).any()]
    alone, _ = predict_paths(segmenter, [folder], tmp_path / "alone")
    volume, _ = predict_paths(segmenter, [folder], tmp_path / "volume", volume=True)
    from brainviewer.data.io import read_mask

    by_name = {p.name: p for p in alone}
    free_outputs = [by_name[f"{Path(r.image_path).stem}_pred.png"] for r in free]
    assert free_outputs and not any(read_mask(p).any() for p in free_outputs)
    assert all(read_mask(p).any() for p in volume)  # a volume is not gated (its 3-D step does that job)


def test_fit_gate_writes_a_new_folder_with_head_threshold_and_report(
    tiny_weights: Path, phantom_dataset: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    shutil.copytree(tiny_weights, source)
    ids = open_dataset(phantom_dataset).patient_ids
    Split(train=ids[:4], val=ids[4:], mode="random", seed=0).save(source / "split.json")
    before = {f.name: f.read_bytes() for f in source.iterdir()}
    out, report = fit_gate(source, open_dataset(phantom_dataset), tmp_path / "out", max_fp=0.0)
    assert {f.name: f.read_bytes() for f in source.iterdir()} == before  # the source is untouched
    assert (out / "split.json").read_text() == (source / "split.json").read_text()
    assert json.loads((out / GATE_FILE).read_text())["tumour_gate"] == report["tumour_gate"]
    card = (out / "README.md").read_text()
    assert card.startswith((source / "README.md").read_text().rstrip()) and "Tumour-present gate" in card
    loaded = Segmenter.from_folder(out, device="cpu")
    assert has_head(loaded.model) and loaded.prep.tumour_gate == report["tumour_gate"]
    assert report["validation_patients"] == ids[4:]
    images = [np.full((64, 64, 3), 40, np.uint8)]
    original = Segmenter.from_folder(source, device="cpu")
    np.testing.assert_array_equal(loaded.predict_probs_batch(images)[0], original.predict_probs_batch(images)[0])
    with pytest.raises(FileExistsError):
        fit_gate(source, open_dataset(phantom_dataset), out)
    with pytest.raises(ValueError, match="already has"):
        fit_gate(out, open_dataset(phantom_dataset), tmp_path / "again")


def _patient(presence: list[float], shown: list[bool], tumour: list[bool]) -> PatientSlices:
    truth = np.array([10 if t else 0 for t in tumour])
    predicted = np.array([10 if s else 0 for s in shown])
    overlap = np.minimum(truth, predicted)
    return PatientSlices(np.array(presence), np.array(shown), np.array(tumour), overlap, predicted, truth)


def test_the_threshold_is_the_smallest_that_reaches_the_false_positive_target() -> None:
    patients = {
        "a": _patient([0.9, 0.2, 0.35, 0.1], [True, True, True, False], [True, False, False, False]),
        "b": _patient([0.8, 0.3, 0.05, 0.6], [True, True, False, True], [True, False, False, True]),
    }
    assert score_gate(patients, None)["fp"] == 3
    assert choose_threshold(patients, max_fp=0.0) == 0.36  # above 0.35, the highest false slice
    assert choose_threshold(patients, max_fp=0.6) is None  # 3 of 5 tumour-free slices: no gate needed
    assert choose_threshold(patients, max_fp=0.5) == 0.21  # 2 of 5
    gated = score_gate(patients, 0.36)
    assert gated["fp"] == 0 and gated["tumour_slices_shown"] == 3 and gated["mean_dice"] == 1.0
    lopo = leave_one_patient_out(patients, max_fp=0.0)
    assert lopo["thresholds"] == [0.31, 0.36]  # each chosen on the other patient only
    assert lopo["fp"] == 1  # a's 0.35 slice passes b's threshold
