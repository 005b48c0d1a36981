"""The Review page with weights that have a tumour-present gate: a slice the head calls tumour-free shows no
mask and says why, and the reviewer can show the mask anyway."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from brainviewer.model.gate import attach_head
from brainviewer.model.preprocessing import Preprocessing
from brainviewer.model.segmenter import load_model, save_weights
from tests.ui.test_app_review import gradient, new_app, png_bytes


def gated_weights(tiny_weights: Path, folder: Path, presence_logit: float) -> Path:
    """The tiny model with a full ungated mask on every slice, and a head whose answer is always
    ``sigmoid(presence_logit)``, gated at 0.5."""
    model, prep = load_model(tiny_weights)
    with torch.no_grad():
        model.segmentation_head[0].bias.fill_(20.0)
    attach_head(model, np.zeros(int(model.encoder.out_channels[-1]), np.float32), presence_logit)
    return save_weights(model, folder, Preprocessing(**{**prep.__dict__, "tumour_gate": 0.5}))


def review_upload(at) -> None:
    at.radio(key="review_source").set_value("Upload").run()
    scan = np.stack([gradient(64, 64)] * 3, axis=-1)
    at.file_uploader(key="review_upload").set_value(("slice.png", png_bytes(scan), "image/png")).run()


def test_a_slice_the_gate_calls_tumour_free_shows_no_mask_until_asked(
    app_env, monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(gated_weights(tiny_weights, tmp_path / "gated", -10.0)))
    at = new_app().run()
    review_upload(at)
    assert not at.exception, [e.value for e in at.exception]
    assert any("calls this slice tumour-free" in str(info.value) for info in at.info)
    cards = {m.label: m.value for m in at.metric}
    assert cards["Predicted area (px)"] == "0"
    assert "The threshold does not change this" in " ".join(str(info.value) for info in at.info)
    (toggle,) = [t for t in at.toggle if t.key.startswith("review_show_gated_")]  # this scan's own toggle
    toggle.set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Predicted area (px)"] == f"{64 * 64:,}"
    # another scan starts hidden again: showing one slice's mask does not turn the gate off for the session
    scan = np.stack([gradient(64, 64).T] * 3, axis=-1)
    at.file_uploader(key="review_upload").set_value(("other.png", png_bytes(scan), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert {m.label: m.value for m in at.metric}["Predicted area (px)"] == "0"
    assert not any(t.value for t in at.toggle if t.key.startswith("review_show_gated_"))


def test_show_the_mask_anyway_is_remembered_per_slice(
    app_env, monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(gated_weights(tiny_weights, tmp_path / "gated", -10.0)))
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    scans = {
        name: np.stack([image] * 3, axis=-1)
        for name, image in (("a.png", gradient(64, 64)), ("b.png", gradient(64, 64).T))
    }
    at.file_uploader(key="review_upload").set_value([(n, png_bytes(s), "image/png") for n, s in scans.items()]).run()

    def area() -> str:
        assert not at.exception, [e.value for e in at.exception]
        return {m.label: m.value for m in at.metric}["Predicted area (px)"]

    at.selectbox(key="review_item").set_value("a.png").run()
    (toggle,) = [t for t in at.toggle if t.key.startswith("review_show_gated_")]
    toggle.set_value(True).run()
    assert area() == f"{64 * 64:,}"
    at.selectbox(key="review_item").set_value("b.png").run()  # a.png's toggle is not drawn on this run
    assert area() == "0"
    at.selectbox(key="review_item").set_value("a.png").run()  # back: still shown
    assert area() == f"{64 * 64:,}"
    (toggle,) = [t for t in at.toggle if t.key.startswith("review_show_gated_")]
    toggle.set_value(False).run()
    at.selectbox(key="review_item").set_value("b.png").run()
    at.selectbox(key="review_item").set_value("a.png").run()  # hidden again, as left
    assert area() == "0"


def test_the_downloaded_figure_says_what_the_gate_decided() -> None:
    from brainviewer.views.review import figure_note
    from brainviewer.views.review_sources import phantom_items

    item = phantom_items(1, 64)[0]
    note = figure_note(item, "lgg", 0.5, "called tumour-free (tumour-present probability 0.31 < gate 0.58)")
    assert "threshold 0.50 · called tumour-free (tumour-present probability 0.31 < gate 0.58) · source" in note
    assert "gate" not in figure_note(item, "lgg", 0.5)


def test_a_slice_the_gate_lets_through_shows_its_mask_and_the_probability(
    app_env, monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(gated_weights(tiny_weights, tmp_path / "open", 10.0)))
    at = new_app().run()
    review_upload(at)
    assert not at.exception, [e.value for e in at.exception]
    assert any("Tumour-present probability 1.00 (gate 0.50)" in str(c.value) for c in at.caption)
    assert not any("tumour-free" in str(info.value) for info in at.info)
    assert {m.label: m.value for m in at.metric}["Predicted area (px)"] == f"{64 * 64:,}"


def test_fine_tuning_sample_predictions_are_gated_as_on_the_review_page(
    tiny_weights: Path, tmp_path: Path, phantom_dataset: Path
) -> None:
    from brainviewer.data.datasets import open_dataset
    from brainviewer.model.segmenter import Segmenter
    from brainviewer.ui import finetune_watch

    dataset = open_dataset(phantom_dataset)
    record = next(r for r in dataset.records if dataset.load_mask(r).any())
    scores = {}
    for name, logit in (("closed", -10.0), ("open", 10.0)):
        segmenter = Segmenter.from_folder(gated_weights(tiny_weights, tmp_path / name, logit), device="cpu")
        _, scores[name] = finetune_watch._sample_picture.__wrapped__(
            name, str(record.image_path), segmenter, dataset, record
        )
    assert scores["closed"] == 0.0  # a tumour slice the head calls tumour-free: no mask, as Review shows it
    assert scores["open"] > 0.0  # the full ungated mask overlaps the tumour


def test_big_scans_get_a_small_prediction_cache_of_their_own() -> None:
    """A visitor who uploads many big scans pins at most LARGE_ENTRIES of their probabilities, not 64."""
    from brainviewer.data.io import MAX_PIXELS
    from brainviewer.ui import review_model

    mib = 1024 * 1024
    small = review_model.SMALL_ENTRIES * review_model.LARGE_SCAN_PIXELS * 4  # float32 probabilities
    large = review_model.LARGE_ENTRIES * MAX_PIXELS * 4
    assert small + large <= 600 * mib
    assert review_model.cached_prediction_for((256, 256, 3)) is review_model._cached_prediction
    assert review_model.cached_prediction_for((1024, 1024)) is review_model._cached_prediction
    assert review_model.cached_prediction_for((1025, 1024, 3)) is review_model._cached_large_prediction
    calls: list[tuple] = []

    class Standin:  # what item_prediction needs of a Segmenter
        def predict_slices(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[float | None]]:
            calls.append(images[0].shape)
            return [np.full(images[0].shape[:2], 0.25, np.float32)], [None]

    model = SimpleNamespace(segmenter=Standin(), model_id="standin")
    big = SimpleNamespace(image=np.zeros((2048, 1024), np.uint8), key="big-scan", name="big.png")
    review_model._cached_large_prediction.clear()
    for _ in range(2):
        probs, presence = review_model.item_prediction(model, big)  # type: ignore[arg-type]
    assert probs.shape == (2048, 1024) and presence is None
    assert calls == [(2048, 1024)]  # the second look came from the cache


def test_fine_tuning_samples_show_each_patients_largest_tumour_and_no_dice_without_tumour(
    tiny_weights: Path, tmp_path: Path, phantom_dataset: Path
) -> None:
    from brainviewer.data.datasets import open_dataset
    from brainviewer.data.split import Split
    from brainviewer.model.segmenter import Segmenter
    from brainviewer.runs.compare import validation_records
    from brainviewer.training.config import TrainConfig
    from brainviewer.ui import finetune_watch

    dataset = open_dataset(phantom_dataset)
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig(data=str(phantom_dataset)).save(run / "config.json")
    Split(train=[], val=dataset.patient_ids[:2], mode="random", seed=1).save(run / "split.json")
    opened, records = validation_records(run, 2)
    for record in records:  # each patient's slice with the largest tumour
        areas = [int(opened.load_mask(r).sum()) for r in opened.patients[record.patient_id]]
        assert int(opened.load_mask(record).sum()) == max(areas) > 0
    empty = next(r for r in dataset.records if not dataset.load_mask(r).any())
    closed = Segmenter.from_folder(gated_weights(tiny_weights, tmp_path / "closed", -10.0), device="cpu")
    _, score = finetune_watch._sample_picture.__wrapped__("c", str(empty.image_path), closed, dataset, empty)
    assert score is None  # no tumour and none predicted: nothing to score, as the Review page's "n/a"
