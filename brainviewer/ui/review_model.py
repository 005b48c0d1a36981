"""The model's answer for a scan on the Review page: its probabilities and tumour-present probability, cached
per (model, scan), and what the tumour-present gate (:mod:`brainviewer.model.gate`) makes of them: whether the
model's classification head calls the slice tumour-free, with a toggle to see the mask anyway."""

from __future__ import annotations

import logging

import numpy as np
import streamlit as st

from brainviewer.limits import scan_slot
from brainviewer.model.segmenter import Segmenter
from brainviewer.ui.sidebar import ModelState
from brainviewer.ui.state import REVIEW_SHOW_GATED_KEY
from brainviewer.views.review import ReviewItem

logger = logging.getLogger(__name__)

GATE_HELP = (
    "The model's classification head gives each slice a probability that it holds tumour. Below the gate, "
    "chosen on validation patients so that few tumour-free slices show a false tumour, the slice is called "
    "tumour-free and its mask is hidden. The gate also hides some small tumours: the weights' tumour_gate.json "
    "says how many on validation. Whole patients on the Patients page are not gated: keeping the largest 3-D "
    "component does that job there."
)


@st.cache_data(max_entries=64, show_spinner="Running the model on this scan…")
def _cached_prediction(
    model_id: str, item_key: str, _segmenter: Segmenter, _image: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """Probabilities and tumour-present probability keyed by (model id, scan content hash); the underscored
    arguments are not hashed."""
    with scan_slot():  # a bounded number of scans segmented at once, all sessions together
        probs, presence = _segmenter.predict_slices([_image])
        return probs[0], presence[0]


def item_prediction(model: ModelState, item: ReviewItem) -> tuple[np.ndarray | None, float | None]:
    """``(probs, presence)`` of ``item`` (cached): ``(H, W)`` float32 tumour probabilities, or ``None`` without a
    model, and the tumour-present head's probability in ``[0, 1]`` (``None`` for weights without a head).

    A failing model shows ``st.error`` and returns ``(None, None)``; it never stops the page.
    """
    if model.segmenter is None or model.model_id is None:
        return None, None
    try:
        return _cached_prediction(model.model_id, item.key, model.segmenter, item.image)
    except Exception as err:
        logger.exception("model failed on %s", item.name)
        st.error(f"The model failed on {item.name}: {type(err).__name__}: {err}")
        return None, None


def gate_hides_mask(model: ModelState, presence: float | None) -> bool:
    """Say what the gate decided for this slice; returns whether the mask is hidden (the reviewer can show it
    with the "Show the mask anyway" toggle). Weights without a gate say nothing and hide nothing."""
    gate = None if model.segmenter is None else model.segmenter.prep.tumour_gate
    if gate is None or presence is None:
        return False
    if presence >= gate:
        st.caption(f"Tumour-present probability {presence:.2f} (gate {gate:.2f}): the mask is shown.", help=GATE_HELP)
        return False
    show = st.toggle("Show the mask anyway", key=REVIEW_SHOW_GATED_KEY, help=GATE_HELP)
    st.info(
        f"The model calls this slice tumour-free: its tumour-present probability {presence:.2f} is below the gate "
        f"{gate:.2f}, so the prediction panels {'show the mask anyway' if show else 'are empty'}.",
        icon=":material/visibility_off:" if not show else ":material/visibility:",
    )
    return not show
