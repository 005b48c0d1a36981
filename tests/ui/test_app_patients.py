"""The Patients and Evaluation pages through streamlit's AppTest (phantom data, tiny untrained model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brainviewer.data.datasets import open_dataset
from brainviewer.model.segmenter import Segmenter
from brainviewer.views.dataset_evaluation import evaluate_dataset

APP = "../../app.py"  # AppTest resolves paths against this test file


@pytest.fixture
def predict_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of the batches given to Segmenter.predict_probs_batch (the model forward passes)."""
    calls: list[int] = []
    original = Segmenter.predict_probs_batch

    def counting(self, images, batch_size=8):
        calls.append(len(images))
        return original(self, images, batch_size)

    monkeypatch.setattr(Segmenter, "predict_probs_batch", counting)
    return calls


def open_page(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(page)
    return at.run()


def texts(at, *kinds: str) -> str:
    kinds = kinds or ("markdown", "caption", "info", "warning", "error", "title")
    parts = [str(element.value) for kind in kinds for element in at.get(kind)]
    parts += [caption for image in at.image for caption in image.captions]
    return "\n".join(parts)


def metric_values(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_patients_page_scrubs_without_rerunning_the_model(
    app_env: None, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path, predict_calls: list[int]
) -> None:
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    dataset = open_dataset(phantom_dataset)
    patient = dataset.patient_ids[0]
    areas = [int(dataset.load_mask(r).sum()) for r in dataset.patients[patient]]

    at = open_page("pages/patients.py")
    assert not at.exception, at.exception
    assert at.radio(key="patient_source").value == "Dataset patient"
    assert at.selectbox(key="patient_pick").value == patient
    assert predict_calls == [8]  # the whole patient (8 slices) in one batch, once
    slider = at.slider(key="patient_slice")
    assert (slider.min, slider.max) == (1, 8)
    assert slider.value == int(np.argmax(areas)) + 1  # opens on the largest ground-truth tumour
    assert f"{patient} · slice {slider.value} of 8" in texts(at)
    assert at.image[1].captions[0] == f"Ground truth: {max(areas):,} px"
    cards = metric_values(at)
    assert cards["Truth (voxels)"] == f"{sum(areas):,}"  # phantom PNGs: spacing unknown, the unit in the label
    assert cards["Tumour slices"].startswith("4 / ")
    assert "Volume Dice" in cards

    at.slider(key="patient_slice").set_value(2).run()
    assert not at.exception
    assert f"{patient} · slice 2 of 8" in texts(at)
    assert at.image[1].captions[0] == f"Ground truth: {areas[1]:,} px"
    at.button(key="patient_next").click().run()
    assert at.slider(key="patient_slice").value == 3
    at.button(key="patient_prev").click().run()
    at.button(key="patient_prev").click().run()
    assert at.slider(key="patient_slice").value == 1
    at.slider(key="threshold").set_value(0.9).run()
    assert not at.exception
    assert predict_calls == [8]  # scrubbing and the threshold never ran the model again

    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Predicted masks (ZIP)", "Per-slice metrics (CSV)", "Patient metrics (CSV)", "Report (HTML)"} <= set(labels)
    assert "Predicted mask (NIfTI)" not in labels  # PNG dataset: no affine to write a NIfTI with

    at.selectbox(key="patient_pick").set_value(dataset.patient_ids[1]).run()
    assert not at.exception
    assert predict_calls == [8, 8]
    areas_1 = [int(dataset.load_mask(r).sum()) for r in dataset.patients[dataset.patient_ids[1]]]
    assert at.slider(key="patient_slice").value == int(np.argmax(areas_1)) + 1


def test_patients_page_offers_the_phantom_without_a_dataset(app_env: None) -> None:
    at = open_page("pages/patients.py")
    assert not at.exception, at.exception
    assert at.radio(key="patient_source").value == "Synthetic phantom"
    assert "SYNTHETIC PHANTOM" in texts(at, "warning")
    assert at.selectbox(key="patient_pick").value == "PHANTOM_00_20000101"
    assert at.slider(key="patient_slice").max == 12


def test_evaluation_page_shows_the_mean_dice_and_opens_a_patient(
    app_env: None, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path, tiny_weights: Path
) -> None:
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    at = open_page("pages/evaluation.py")
    assert not at.exception, at.exception
    assert not at.metric  # nothing runs before the button
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception

    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    expected = evaluate_dataset(
        open_dataset(phantom_dataset), lambda scans: segmenter.predict_probs_batch(scans, 16), segmenter.prep.threshold
    )
    cards = metric_values(at)
    assert cards["Mean volume Dice"] == f"{expected.report.mean_dice:.3f}"
    assert cards["Median volume Dice"] == f"{expected.report.median_dice:.3f}"
    assert cards["Micro Dice"] == f"{expected.report.micro_dice:.3f}"
    labels = [b.proto.label for b in at.get("download_button")]
    assert {"Per-patient results (CSV)", "Per-slice results (CSV)", "Summary and patients (JSON)"} <= set(labels)

    # open the worst slice on the Patients page
    worst = expected.worst_slices(1)[0]
    choice = next(o for o in at.selectbox(key="eval_open_choice").options if o.startswith(f"{worst.patient_id}, "))
    at.selectbox(key="eval_open_choice").set_value(choice).run()
    at.button(key="eval_open").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="patient_pick").value == worst.patient_id
    slice_number = int(choice.split("slice ")[1].split(" ")[0])
    assert at.slider(key="patient_slice").value == slice_number


def test_an_evaluation_can_be_stopped_and_resumed(
    app_env: None, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path
) -> None:
    """Stop evaluation shows while an evaluation runs (here: one interrupted half way), takes the page back to
    its Run button, and is gone once an evaluation has finished."""
    import streamlit as st

    import brainviewer.ui.evaluation as evaluation_ui

    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    at = open_page("pages/evaluation.py")
    assert not at.button(key="eval_run").disabled and not [b for b in at.button if b.key == "eval_stop"]
    finish = evaluation_ui.evaluate_with_progress
    monkeypatch.setattr(evaluation_ui, "evaluate_with_progress", lambda *args, **kwargs: st.stop())  # still running
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert at.button(key="eval_stop").label == "Stop evaluation" and not at.metric
    at.button(key="eval_stop").click().run()
    assert not at.exception, at.exception
    assert any("Press **Run evaluation**" in i.value for i in at.info) and not at.metric
    monkeypatch.setattr(evaluation_ui, "evaluate_with_progress", finish)
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert at.metric and not [b for b in at.button if b.key == "eval_stop"]  # finished: no Stop left on screen


def test_evaluation_page_shows_dice_by_group_from_a_groups_csv(
    app_env: None, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    from brainviewer.evaluation.evaluate import group_summaries

    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    at = open_page("pages/evaluation.py")
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert at.text_input(key="eval_groups").value == ""  # no labels.csv beside the phantom dataset

    ids = open_dataset(phantom_dataset).patient_ids
    group_of = {p: ("first half" if i < len(ids) // 2 else "second half") for i, p in enumerate(ids[:-1])}
    groups = tmp_path / "groups.csv"
    groups.write_text("patient_id,group\n" + "".join(f"{p},{g}\n" for p, g in group_of.items()))
    at.text_input(key="eval_groups").set_value(str(groups)).run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "group" in d.value.columns)
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    expected = evaluate_dataset(
        open_dataset(phantom_dataset), lambda scans: segmenter.predict_probs_batch(scans, 16), segmenter.prep.threshold
    )
    by_group = group_summaries(expected.report.patients, group_of)
    assert list(table["group"]) == ["(no group)", "first half", "second half"] == list(by_group)
    assert list(table["patients"]) == [1, len(ids) // 2, len(ids) - len(ids) // 2 - 1]
    assert np.allclose(table["mean_volume_dice"], [g["mean_volume_dice"] for g in by_group.values()])

    (tmp_path / "bad.csv").write_text("name,kind\nx,y\n")
    at.text_input(key="eval_groups").set_value(str(tmp_path / "bad.csv")).run()
    assert not at.exception, at.exception
    assert any("needs a patient column" in e.value for e in at.error)


def test_pages_apply_the_weights_volume_post_processing_and_tta(
    app_env: None, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """Weights whose preprocessing.json asks for flip TTA and the largest 3-D component: the
    Evaluation page's figures and the Patients page's prediction follow them."""
    import json
    import shutil

    from brainviewer.views.patient import predicted_masks

    folder = tmp_path / "tiny-volume"
    shutil.copytree(tiny_weights, folder)
    segmenter = Segmenter.from_folder(folder, device="cpu")
    dataset = open_dataset(phantom_dataset)
    patient = dataset.patient_ids[0]
    segmenter.prep.tta_flip = True
    probs = segmenter.predict_probs_batch([dataset.load_image(r) for r in dataset.patients[patient]])
    threshold = round(float(np.quantile(np.stack(probs), 0.97)), 2)  # the sliders step by 0.01
    prep = json.loads((folder / "preprocessing.json").read_text())
    prep.update(tta_flip=True, volume_keep_largest=True, threshold=threshold)
    (folder / "preprocessing.json").write_text(json.dumps(prep))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(folder))
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))

    at = open_page("pages/evaluation.py")
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    segmenter = Segmenter.from_folder(folder, device="cpu")
    probs_fn = lambda scans: segmenter.predict_probs_batch(scans, 16)  # noqa: E731
    expected = evaluate_dataset(dataset, probs_fn, threshold, volume_keep_largest=True)
    assert expected.report.volume_keep_largest
    assert metric_values(at)["Micro Dice"] == f"{expected.report.micro_dice:.3f}"

    at = open_page("pages/patients.py")
    assert not at.exception, at.exception
    masks = predicted_masks(probs, threshold, volume_keep_largest=True)
    assert sum(m.sum() for m in masks) < sum((p >= threshold).sum() for p in probs)  # the 3-D step removed blobs
    shown = at.slider(key="patient_slice").value - 1
    assert at.image[3].captions[0] == f"Predicted: {int(masks[shown].sum()):,} px"


def test_evaluation_page_without_a_dataset_offers_the_phantom(app_env: None) -> None:
    at = open_page("pages/evaluation.py")
    assert not at.exception, at.exception
    assert "No dataset is configured" in texts(at, "info")
    assert not at.button
    at.toggle(key="eval_phantom").set_value(True).run()
    assert "SYNTHETIC PHANTOM" in texts(at, "warning")
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    assert "Mean volume Dice" in metric_values(at)


def test_pages_tell_held_out_patients_from_those_the_model_was_trained_on(
    app_env: None, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """Weights with a split.json: the Review and Patients pages tag held-out patients and say when the
    model was trained on the patient shown; the Evaluation page scores only the held-out ones by default."""
    import shutil

    from brainviewer.data.split import Split

    folder = tmp_path / "tiny-split"
    shutil.copytree(tiny_weights, folder)
    patients = open_dataset(phantom_dataset).patient_ids
    trained, held_out = patients[:4], patients[4:]
    Split(train=trained, val=held_out, mode="contiguous", seed=0).save(folder / "split.json")
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(folder))
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))

    at = open_page("pages/review.py")
    assert not at.exception, at.exception
    picker = at.selectbox(key="review_patient")
    assert picker.options == trained + [f"{p} · held out" for p in held_out]
    assert picker.value == held_out[0]  # a first look is a fair one: the first held-out patient
    assert f"Held out: {held_out[0]} is one of the validation patients of tiny-split" in texts(at, "caption")
    picker.set_value(trained[0]).run()
    assert f"tiny-split was trained on {trained[0]}" in texts(at, "caption")
    # an uploaded slice is recognised by its file name (<patient>_<n>)
    slice_file = next((phantom_dataset / trained[1]).glob(f"{trained[1]}_3.*"))
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value((slice_file.name, slice_file.read_bytes(), "image/png")).run()
    assert not at.exception, at.exception
    assert f"tiny-split was trained on {trained[1]}" in texts(at, "caption")

    at = open_page("pages/patients.py")
    assert not at.exception, at.exception
    assert at.selectbox(key="patient_pick").options[4] == f"{held_out[0]} · held out"
    assert at.selectbox(key="patient_pick").value == held_out[0]
    assert "Held out:" in texts(at, "caption")
    at.selectbox(key="patient_pick").set_value(trained[2]).run()
    assert f"tiny-split was trained on {trained[2]}" in texts(at, "caption")

    at = open_page("pages/evaluation.py")
    assert at.toggle(key="eval_held_out").value is True
    at.button(key="eval_run").click().run()
    assert not at.exception, at.exception
    shown = texts(at, "caption")
    assert "The 2 validation patients tiny-split never trained on: 2 patients, 16 slices" in shown
    at.toggle(key="eval_held_out").set_value(False).run()
    assert "All patients: 6 patients, 48 slices" in texts(at, "caption")


def _upload_sagittal_series():
    from brainviewer.ui import patient_sources as ui
    from tests.data.test_volumes import sagittal_series, zip_bytes

    at = open_page("pages/patients.py")
    at.radio(key="patient_source").set_value(ui.PATIENT_SOURCE_UPLOAD).run()
    upload = zip_bytes([(f"series/{name}", data) for name, data in sagittal_series()])
    at.file_uploader(key="patient_upload").set_value([("sagittal.zip", upload, "application/zip")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def test_a_sagittal_series_gets_a_plane_note_only_from_a_model_that_records_its_planes(
    app_env: None, monkeypatch: pytest.MonkeyPatch, tiny_weights: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    axial = tmp_path / "axial-only"
    shutil.copytree(tiny_weights, axial)
    prep = json.loads((axial / "preprocessing.json").read_text())
    (axial / "preprocessing.json").write_text(json.dumps({**prep, "planes": ["axial"]}))
    every_plane = tmp_path / "weights" / "every-plane"  # a grayscale model of all planes, one click away
    shutil.copytree(tiny_weights, every_plane)
    gray = {**prep, "planes": ["axial", "coronal", "sagittal"], "channel_names": ["grayscale"] * 3}
    (every_plane / "preprocessing.json").write_text(json.dumps(gray))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(axial))
    at = _upload_sagittal_series()
    assert "was trained on axial slices only, and this series was acquired sagittal" in texts(at, "info")
    at.button(key="use_plane_model").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="model_choice").value == "every-plane"
    assert "this series was acquired" not in texts(at, "info")


def test_a_sagittal_dicom_upload_is_shown_axially_and_offers_a_nifti_mask(app_env: None, tmp_path: Path) -> None:
    at = _upload_sagittal_series()
    assert "this series was acquired" not in texts(at, "info")  # the tiny weights record no planes: no guess
    text = texts(at, "caption")
    assert "sagittal series, shown as axial slices reformatted from it" in text
    assert "resampled to 6x44" in text
    assert at.slider(key="patient_slice").max == 6  # slices 1..6: the axial levels, not the 8 sagittal slices
    # no mask volume uploaded: the overlay panel points at the mask-volume uploader, not at <scan>_mask files
    assert "No ground truth: add its mask volume under 'Optional: its ground-truth mask volume'" in texts(at)
    # the NIfTI file itself is built on click; test_volumes checks it lands on the series' grid
    assert "Predicted mask (NIfTI)" in [b.proto.label for b in at.get("download_button")]


def test_patients_page_says_when_the_3d_step_removed_pixels_on_the_slice(
    app_env: None, monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    """The Review page predicts a slice alone; the Patients page keeps the largest 3-D component and says
    so under the panels where that removed pixels on the slice shown."""
    import json
    import shutil

    from brainviewer.views.patient import predicted_masks

    folder = tmp_path / "tiny-volume"
    shutil.copytree(tiny_weights, folder)
    segmenter = Segmenter.from_folder(folder, device="cpu")
    dataset = open_dataset(phantom_dataset)
    patient = dataset.patient_ids[0]
    probs = segmenter.predict_probs_batch([dataset.load_image(r) for r in dataset.patients[patient]])
    threshold = round(float(np.quantile(np.stack(probs), 0.97)), 2)
    prep = json.loads((folder / "preprocessing.json").read_text())
    prep.update(volume_keep_largest=True, threshold=threshold)
    (folder / "preprocessing.json").write_text(json.dumps(prep))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(folder))
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))

    masks = predicted_masks(probs, threshold, volume_keep_largest=True)
    before = [int((p >= threshold).sum()) for p in probs]
    cut = [i for i, m in enumerate(masks) if int(m.sum()) < before[i]]
    kept = [i for i, m in enumerate(masks) if int(m.sum()) == before[i]]
    assert cut  # the untrained model's scattered blobs: the 3-D step removes some

    at = open_page("pages/patients.py")
    at.slider(key="patient_slice").set_value(cut[0] + 1).run()
    assert not at.exception, at.exception
    after = int(masks[cut[0]].sum())
    assert at.image[3].captions[0] == f"Predicted: {after:,} px"  # the panel itself is unchanged
    expected = f"Predicted: {after:,} px after keeping the largest 3-D component ({before[cut[0]]:,} px before)"
    assert expected in texts(at, "caption")
    if kept:  # a slice the 3-D step left alone has no note
        at.slider(key="patient_slice").set_value(kept[0] + 1).run()
        assert "largest 3-D component" not in texts(at, "caption")
