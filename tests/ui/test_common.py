"""brainviewer.ui.common: the Evaluation page's progress (per batch of slices, "slice i of n", time left), its
probabilities (the whole patient's intensity levels, as ``python -m brainviewer evaluate`` uses them), and the
grey cards of unavailable panels."""

from __future__ import annotations

import numpy as np
import pytest

from brainviewer.model.inference import predict_volume_probs
from brainviewer.model.segmenter import Segmenter
from brainviewer.ui.common import PATIENT_BATCH, patient_probs, progress_text
from brainviewer.views.examples import LGG_WEIGHTS
from tests.conftest import LGG


def test_progress_text_counts_slices_and_says_the_time_left():
    assert progress_text(0, 564, None, None) == "Evaluating slice 1 of 564…"
    assert progress_text(39, 564, None, 130.0) == "Evaluating slice 40 of 564 · about 2m 10s left…"
    text = progress_text(100, 3274, (3, 88, "TCGA_CS_4941_19960909"), 7.4)
    assert text == "Evaluating slice 101 of 3,274 (patient 3 of 88: TCGA_CS_4941_19960909) · about 7s left…"
    assert progress_text(564, 564, None, 0.0).startswith("Evaluating slice 564 of 564")  # never "565 of 564"


def test_patient_probs_ticks_per_batch(tiny_weights):
    segmenter = Segmenter.from_folder(tiny_weights, device="cpu")
    scans = [np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(PATIENT_BATCH + 3)]
    ticks: list[int] = []
    probs = patient_probs(segmenter, scans, ticks.append)
    assert ticks == [PATIENT_BATCH, 3]
    expected = segmenter.predict_probs_batch(scans, PATIENT_BATCH)
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(probs, expected, strict=True))


def test_patient_probs_use_the_patients_levels_like_the_cli():
    """The default LGG model normalises per patient: the Evaluation page now gives what `evaluate` gives
    (before, each slice was predicted without the patient's levels)."""
    if not (LGG_WEIGHTS / "model.safetensors").is_file() or not LGG.is_dir():
        pytest.skip("needs the shipped LGG weights and the shared LGG data")
    from brainviewer.data.datasets import open_dataset

    segmenter = Segmenter.from_folder(LGG_WEIGHTS, device="cpu")
    if segmenter.prep.intensity_norm != "volume_percentile":
        pytest.skip("the shipped LGG weights do not normalise per patient")
    dataset = open_dataset(LGG / "kaggle_3m")
    records = dataset.patients["TCGA_CS_5393_19990606"][:6]
    scans = [dataset.load_image(r) for r in records]
    page = patient_probs(segmenter, scans)
    cli = predict_volume_probs(segmenter, scans, PATIENT_BATCH)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(page, cli, strict=True))


def test_the_two_no_ground_truth_cards_are_drawn_alike():
    from brainviewer.ui.common import placeholder_text
    from brainviewer.views.overlay import placeholder_image
    from brainviewer.views.review import ReviewItem, render_review

    item = ReviewItem("scan.png", np.zeros((64, 64), np.uint8))  # no mask
    view = render_review(item, None, no_prediction_reason="no model loaded")
    cards = [placeholder_image(item.shape, placeholder_text(p.caption)) for p in view.panels if p.image is None]
    assert len(cards) == 4  # ground truth, its overlay, prediction, its overlay
    assert np.array_equal(cards[0], cards[1]) and np.array_equal(cards[2], cards[3])
    assert placeholder_text("No ground truth for this scan") == placeholder_text("No ground truth: upload it")
