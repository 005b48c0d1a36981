"""The Evaluation page's compare view through streamlit's AppTest: two tiny models on the phantom dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainviewer.data.datasets import open_dataset
from brainviewer.data.split import Split
from brainviewer.evaluation.compare_models import compare_models
from brainviewer.evaluation.compare_run import evaluate_weights, report_scores
from brainviewer.model.segmenter import Segmenter
from tests.ui.test_app_patients import metric_values, open_page, texts


@pytest.fixture
def two_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_weights: Path, phantom_dataset: Path
) -> list[Path]:
    """weights/tiny-a (the default) and weights/tiny-b: the untrained tiny network cut at the 10th and the 40th
    percentile of its probabilities on the phantom (cut at 0.5 it finds no tumour, and both would score 0
    everywhere); fresh Streamlit caches."""
    import streamlit as st

    dataset = open_dataset(phantom_dataset)
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    probs = np.stack(segmenter.predict_probs_batch([dataset.load_image(r) for r in dataset], 16))
    weights_dir = tmp_path / "weights"
    folders = [weights_dir / "tiny-a", weights_dir / "tiny-b"]
    for folder, quantile in zip(folders, (0.1, 0.4), strict=True):
        shutil.copytree(tiny_weights, folder)
        prep = json.loads((folder / "preprocessing.json").read_text())
        prep["threshold"] = round(float(np.quantile(probs, quantile)), 3)
        (folder / "preprocessing.json").write_text(json.dumps(prep))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(folders[0]))
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(tmp_path / "no-runs"))  # the project's runs/ are not listed
    monkeypatch.delenv("BRAINVIEWER_DATA", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield folders
    st.cache_data.clear()
    st.cache_resource.clear()


def expected_comparison(folders: list[Path], labels: list[str], dataset_path: Path, patients: list[str] | None = None):
    dataset = open_dataset(dataset_path)
    dataset = dataset.subset(patients) if patients is not None else dataset
    reports = [evaluate_weights(dataset, Segmenter.from_folder(f, device="cpu")) for f in folders]
    return compare_models({label: report_scores(r, "volume_dice") for label, r in zip(labels, reports, strict=True)})


def test_the_compare_view_gives_the_paired_figures_and_opens_a_disagreeing_patient(
    two_models: list[Path], monkeypatch: pytest.MonkeyPatch, phantom_dataset: Path
) -> None:
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    at = open_page("pages/evaluation.py")
    assert not at.exception, at.exception
    at.radio(key="eval_mode").set_value("Compare models").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_models").value == ["tiny-a (default)", "tiny-b"]
    assert not at.metric  # nothing is scored before the button
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception

    expected = expected_comparison(two_models, ["tiny-a (default)", "tiny-b"], phantom_dataset)
    (pair,) = expected.pairs
    assert pair.reference_better == 6 and pair.wilcoxon_p == pytest.approx(2 / 64)  # tiny-b's higher cut: worse
    cards = metric_values(at)
    assert cards["Mean difference"] == f"{pair.mean_difference:+.3f}"
    assert cards["95% CI of the mean difference"] == f"[{pair.ci_low:+.3f}, {pair.ci_high:+.3f}]"
    assert cards["Wilcoxon p"] == "0.0312"
    assert "**tiny-b − tiny-a (default)**: tiny-b is better on 0, worse on 6 and equal on 0 of the 6" in texts(at)
    table = next(d.value for d in at.dataframe if "tiny-b − tiny-a (default)" in d.value.columns)
    assert list(table["patient"]) == expected.patients
    assert table["tiny-b − tiny-a (default)"].tolist() == pytest.approx(expected.differences("tiny-b").tolist())
    assert len(at.get("plotly_chart")) == 1
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Per-patient comparison (CSV)", "Comparison (JSON)"]

    # the patient where they disagree most opens on the Patients page in one click
    top = expected.disagreements(1)[0]["patient"]
    assert f"`{top}` · spread" in texts(at, "markdown")
    at.button(key=f"compare_open_{top}").click().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="patient_pick").value == top


def test_another_pages_request_opens_the_compare_view_with_its_models_and_dataset(
    two_models: list[Path], phantom_dataset: Path
) -> None:
    # tiny-b trained on the first two patients: by default only the other four are compared
    ids = open_dataset(phantom_dataset).patient_ids
    Split(train=ids[:2], val=ids[2:], mode="patient", seed=0).save(two_models[1] / "split.json")
    at = open_page("pages/review.py")  # no dataset configured
    at.session_state["compare_request"] = {
        "models": ["tiny-b", "tiny-a (default)", "not-a-model"],
        "dataset_path": str(phantom_dataset),
    }
    at.switch_page("pages/evaluation.py").run()
    assert not at.exception, at.exception
    assert at.radio(key="eval_mode").value == "Compare models"
    assert at.multiselect(key="compare_models").value == ["tiny-b", "tiny-a (default)"]
    assert "not-a-model" in texts(at, "warning")
    assert at.text_input(key="dataset_path_input").value == str(phantom_dataset)
    assert f"Dataset switched to {phantom_dataset} for this comparison" in texts(at, "info")
    assert at.toggle(key="compare_unseen").value
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception

    expected = expected_comparison(two_models[::-1], ["tiny-b", "tiny-a (default)"], phantom_dataset, ids[2:])
    (pair,) = expected.pairs
    assert pair.n == 4 and pair.other_better == 4  # tiny-a, with the lower cut, finds more of each tumour
    assert metric_values(at)["Mean difference"] == f"{pair.mean_difference:+.3f}"
    assert "**tiny-a (default) − tiny-b**: tiny-a (default) is better on 4, worse on 0" in texts(at)

    # the request is used once: choosing one model only asks for another
    at.multiselect(key="compare_models").set_value(["tiny-b"]).run()
    assert not at.exception, at.exception
    assert "Choose at least two models" in texts(at, "info")


def test_a_request_for_all_patients_turns_the_unseen_switch_off_and_counts_are_worded_right(
    two_models: list[Path], phantom_dataset: Path
) -> None:
    """The Fine-tuning page's "on the corrected patients" asks for every patient (``"unseen": False``): the run
    trained on them, and the switch's default (on) would leave none. One patient is "1 patient"."""
    ids = open_dataset(phantom_dataset).patient_ids
    Split(train=ids[1:], val=ids[:1], mode="patient", seed=0).save(two_models[1] / "split.json")
    at = open_page("pages/review.py")
    at.session_state["compare_request"] = {
        "models": ["tiny-a (default)", "tiny-b"],
        "dataset_path": str(phantom_dataset),
        "unseen": False,
    }
    at.switch_page("pages/evaluation.py").run()
    assert not at.exception, at.exception
    switch = at.toggle(key="compare_unseen")
    assert switch.value is False and switch.label == "Only the 1 patient none of these models trained on"
    assert f"All {len(ids)} patients: {len(ids)} patients, {len(open_dataset(phantom_dataset))} slices" in texts(
        at, "caption"
    )
    assert not at.warning

    # a request for unseen patients only turns it back on: one patient, worded in the singular
    at.session_state["compare_request"] = {
        "models": ["tiny-a (default)", "tiny-b"],
        "dataset_path": str(phantom_dataset),
        "unseen": True,
    }
    at.run()
    assert not at.exception, at.exception
    assert at.toggle(key="compare_unseen").value is True
    slices = len(open_dataset(phantom_dataset).subset(ids[:1]))
    assert f"The 1 patient none of the models trained on: 1 patient, {slices} slices" in texts(at, "caption")


def test_in_demo_mode_a_request_opens_only_a_dataset_the_operator_offers(
    two_models: list[Path], phantom_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "TOPSECRET-server-folder"
    shutil.copytree(phantom_dataset, secret)
    monkeypatch.setenv("BRAINVIEWER_DEMO", "1")
    monkeypatch.setenv("BRAINVIEWER_DATASETS", f"phantom={phantom_dataset}")
    at = open_page("pages/review.py")
    at.session_state["compare_request"] = {"models": ["tiny-a (default)", "tiny-b"], "dataset_path": str(secret)}
    at.switch_page("pages/evaluation.py").run()
    assert not at.exception, at.exception
    assert at.radio(key="eval_mode").value == "Compare models"
    assert at.selectbox(key="dataset_choice").value == "(none)"  # not offered: not opened
    assert "No dataset is configured" in texts(at, "info")
    assert "TOPSECRET" not in texts(at)

    at.session_state["compare_request"] = {
        "models": ["tiny-b", "tiny-a (default)"],
        "dataset_path": str(phantom_dataset),
    }
    at.run()
    assert at.selectbox(key="dataset_choice").value == "phantom"
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    assert "**tiny-a (default) − tiny-b**" in texts(at)


def test_a_request_with_the_fine_tuning_pages_labels_compares_a_run_with_its_base(
    two_models: list[Path], phantom_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Fine-tuning page names models as runs.base_weight_choices does: ``weights/<name>``, ``current model
    (<name>)`` and a run's ``run <name> (best)``, which the sidebar does not list."""
    from brainviewer.training.config import TrainConfig

    run_dir = tmp_path / "runs" / "learn"
    run_dir.mkdir(parents=True)
    TrainConfig(data=str(phantom_dataset), epochs=1, run_name="learn", device="cpu").save(run_dir / "config.json")
    (run_dir / "status.json").write_text(json.dumps({"state": "finished"}))
    shutil.copytree(two_models[1], run_dir / "best")  # the run's best weights: tiny-b's
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(tmp_path / "runs"))
    at = open_page("pages/review.py")
    at.session_state["compare_request"] = {
        "models": ["weights/tiny-a", "run learn (best)", "current model (tiny-a)"],
        "dataset_path": str(phantom_dataset),
    }
    at.switch_page("pages/evaluation.py").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="compare_models").value == ["tiny-a (default)", "run learn (best)"]
    assert "run learn (best)" in at.multiselect(key="compare_models").options
    assert not at.warning  # every label was found
    at.button(key="compare_run").click().run()
    assert not at.exception, at.exception
    expected = expected_comparison(two_models, ["tiny-a (default)", "run learn (best)"], phantom_dataset)
    assert metric_values(at)["Mean difference"] == f"{expected.pairs[0].mean_difference:+.3f}"
    assert "**run learn (best) − tiny-a (default)**" in texts(at)
