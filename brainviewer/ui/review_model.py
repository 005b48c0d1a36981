"""The model's answer for a scan on the Review page: its probabilities and tumour-present probability, cached
per (model, scan), and what the tumour-present gate (:mod:`brainviewer.model.gate`) makes of them: whether the
model's classification head calls the slice tumour-free, with a toggle to see the mask anyway."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import streamlit as st

from brainviewer.limits import scan_slot
from brainviewer.model.segmenter import Segmenter
from brainviewer.ui.sidebar import ModelState
from brainviewer.ui.state import REVIEW_SHOW_GATED_KEY, REVIEW_SHOWN_GATED_KEY
from brainviewer.views.review import ReviewItem

logger = logging.getLogger(__name__)

GATE_HELP = (
    "The model's classification head gives each slice a probability that it holds tumour. Below the gate, "
    "chosen on validation patients so that few tumour-free slices show a false tumour, the slice is called "
    "tumour-free and its mask is hidden. The gate also hides some small tumours: the weights' tumour_gate.json "
    "says how many on validation. Whole patients on the Patients page are not gated: keeping the largest 3-D "
    "component does that job there."
)


#: Scans up to this many pixels share the large prediction cache; bigger ones (up to the 4096 x 4096 a scan may
#: have, 64 MiB of float32 probabilities each) get a small one of their own, so that a visitor who uploads
#: many big scans pins at most :data:`LARGE_ENTRIES` of them: about 256 + 256 MiB in all, not 4 GiB.
LARGE_SCAN_PIXELS = 1024 * 1024
SMALL_ENTRIES = 64
LARGE_ENTRIES = 4
_SPINNER = "Running the model on this scan…"


def _predict(segmenter: Segmenter, image: np.ndarray) -> tuple[np.ndarray, float | None]:
    with scan_slot():  # a bounded number of scans segmented at once, all sessions together
        probs, presence = segmenter.predict_slices([image])
        return probs[0], presence[0]


@st.cache_data(max_entries=SMALL_ENTRIES, show_spinner=_SPINNER)
def _cached_prediction(
    model_id: str, item_key: str, _segmenter: Segmenter, _image: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """Probabilities and tumour-present probability keyed by (model id, scan content hash), for scans up to
    :data:`LARGE_SCAN_PIXELS`; the underscored arguments are not hashed."""
    return _predict(_segmenter, _image)


@st.cache_data(max_entries=LARGE_ENTRIES, show_spinner=_SPINNER)
def _cached_large_prediction(
    model_id: str, item_key: str, _segmenter: Segmenter, _image: np.ndarray
) -> tuple[np.ndarray, float | None]:
    """As :func:`_cached_prediction`, for scans over :data:`LARGE_SCAN_PIXELS`."""
    return _predict(_segmenter, _image)


def cached_prediction_for(shape: tuple[int, ...]) -> Callable[..., tuple[np.ndarray, float | None]]:
    """The prediction cache a scan of ``shape`` ``(H, W[, C])`` goes to."""
    large = shape[0] * shape[1] > LARGE_SCAN_PIXELS
    return _cached_large_prediction if large else _cached_prediction


def item_prediction(model: ModelState, item: ReviewItem) -> tuple[np.ndarray | None, float | None]:
    """``(probs, presence)`` of ``item`` (cached): ``(H, W)`` float32 tumour probabilities, or ``None`` without a
    model, and the tumour-present head's probability in ``[0, 1]`` (``None`` for weights without a head).

    A failing model shows ``st.error`` and returns ``(None, None)``; it never stops the page.
    """
    if model.segmenter is None or model.model_id is None:
        return None, None
    try:
        cached = cached_prediction_for(item.image.shape)
        return cached(model.model_id, item.key, model.segmenter, item.image)
    except Exception as err:
        logger.exception("model failed on %s", item.name)
        st.error(f"The model failed on {item.name}: {type(err).__name__}: {err}")
        return None, None


def _shown_gated() -> set[str]:
    """The scan keys whose "Show the mask anyway" toggle is on (kept while a toggle is not drawn)."""
    return st.session_state.setdefault(REVIEW_SHOWN_GATED_KEY, set())


def _remember_shown(key: str, item_key: str) -> None:
    """Keep this slice's "Show the mask anyway" choice for when the reviewer comes back to it."""
    (_shown_gated().add if st.session_state.get(key) else _shown_gated().discard)(item_key)


def gate_decision(model: ModelState, presence: float | None, item_key: str) -> tuple[bool, str | None]:
    """Say what the gate decided for this slice: ``(hidden, note)``. ``hidden``: the mask is hidden (the reviewer
    can show it with this slice's own "Show the mask anyway" toggle, which does not carry over to other slices
    and is remembered when the reviewer comes back to this slice);
    ``note``: a few words for the downloaded figure's footer, ``None`` when the gate let the slice through.
    Weights without a gate say nothing and hide nothing."""
    gate = None if model.segmenter is None else model.segmenter.prep.tumour_gate
    if gate is None or presence is None:
        return False, None
    if presence >= gate:
        st.caption(f"Tumour-present probability {presence:.2f} (gate {gate:.2f}): the mask is shown.", help=GATE_HELP)
        return False, None
    key = f"{REVIEW_SHOW_GATED_KEY}_{item_key}"
    show = st.toggle(
        "Show the mask anyway",
        value=item_key in _shown_gated(),  # Streamlit forgets a widget's state on runs that do not draw it
        key=key,
        help=GATE_HELP,
        on_change=_remember_shown,
        args=(key, item_key),
    )
    st.info(
        f"The model calls this slice tumour-free: its tumour-present probability {presence:.2f} is below the gate "
        f"{gate:.2f}, so the prediction panels {'show the mask anyway' if show else 'are empty'}. "
        + ("" if show else "The threshold does not change this: the gate decides first."),
        icon=":material/visibility_off:" if not show else ":material/visibility:",
    )
    verdict = f"tumour-present probability {presence:.2f} < gate {gate:.2f}"
    return not show, f"mask shown despite the gate ({verdict})" if show else f"called tumour-free ({verdict})"
