"""The Review metric cards: n/a where a ratio has nothing to divide by (a tumour-free slice)."""

from __future__ import annotations

import numpy as np

from brainviewer.evaluation.metrics import slice_metrics
from brainviewer.views.review import NOT_APPLICABLE, ReviewItem, render_review, score_cards


def cards(view) -> dict[str, tuple[str, str]]:
    return {card.label: (card.value, card.help) for card in view.score_cards()}


def test_tumour_free_slice_with_an_empty_prediction_shows_n_a() -> None:
    item = ReviewItem("free.png", np.full((16, 16), 40, np.uint8), truth=np.zeros((16, 16), bool))
    view = render_review(item, np.full((16, 16), 0.1, np.float32), threshold=0.5)
    assert view.metrics is not None and view.metrics.dice == 1.0  # the metric functions' convention
    shown = cards(view)
    for label in ("Dice", "IoU", "Precision", "Recall"):
        assert shown[label][0] == NOT_APPLICABLE == "n/a", label
    assert "no tumour in the ground truth or the prediction" in shown["Dice"][1]
    assert "nothing was predicted" in shown["Precision"][1]
    assert shown["Pixel accuracy"][0] == "1.0000"
    assert [c.value for c in view.area_cards()] == ["0", "0", "+0"]


def test_scores_are_numbers_when_defined() -> None:
    truth = np.zeros((10, 10), bool)
    truth[2:6, 2:6] = True
    pred = np.zeros((10, 10), bool)
    pred[2:6, 2:4] = True
    shown = {c.label: c.value for c in score_cards(slice_metrics(pred, truth))}
    assert shown == {
        "Dice": "0.667",
        "IoU": "0.500",
        "Precision": "1.000",
        "Recall": "0.500",
        "Pixel accuracy": "0.9200",
    }


def test_one_sided_empty_masks() -> None:
    truth = np.zeros((8, 8), bool)
    pred = np.zeros((8, 8), bool)
    pred[1:3, 1:3] = True  # a false alarm on a tumour-free slice: Dice 0, recall undefined
    shown = {c.label: c.value for c in score_cards(slice_metrics(pred, truth))}
    assert (shown["Dice"], shown["Precision"], shown["Recall"]) == ("0.000", "0.000", "n/a")
    shown = {c.label: c.value for c in score_cards(slice_metrics(truth, pred))}  # a missed tumour
    assert (shown["Dice"], shown["Precision"], shown["Recall"]) == ("0.000", "n/a", "0.000")


def test_no_metrics_no_cards() -> None:
    item = ReviewItem("plain.png", np.zeros((8, 8), np.uint8))
    view = render_review(item, np.zeros((8, 8), np.float32))
    assert view.metrics is None and view.score_cards() == [] and view.area_cards() == []
