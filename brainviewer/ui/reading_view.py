"""The reading view of Review and Patients: one large picture of the scan with zoom and pan, window/level
with presets and a reset, ground truth and prediction over it (filled or as outlines, each switchable),
keyboard shortcuts, and the uncertainty map beside it.

API (what the pages call)::

    reading_view(scan, gt, prob, threshold, READING_REVIEW, pred=view.pred_mask, alpha=opacity, view_id=item.key)
    review_reading_view(view, READING_REVIEW, view_id=item.key)   # the same, from a ReviewView
    window = current_window(READING_REVIEW, scan)     # the window the user set, e.g. for an editor below it

The large picture is a plotly image (a PNG made on the server; scroll-zoom and pan in the browser for a
quick look, which Streamlit resets when the picture changes; "Zoom to tumour" is kept on the server, so it
stays while the window, the layers or the slice change). The toolbar and picture live
in an ``st.fragment``, so moving window/level or switching a layer reruns only them, not the page (nor the
uncertainty panel beside them). The picture work is in :mod:`brainviewer.views.reading`, the entropy in
:mod:`brainviewer.model.uncertainty`.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
import streamlit as st

from brainviewer.model.uncertainty import UNCERTAIN_BITS, binary_entropy, uncertainty_rgb
from brainviewer.ui.state import (
    READING_CHART,
    READING_LEVEL,
    READING_OUTLINE,
    READING_OUTLINE_ON,
    READING_PRED,
    READING_PRED_ON,
    READING_PRESET,
    READING_RESET,
    READING_REVISION,
    READING_TRUTH,
    READING_TRUTH_ON,
    READING_WHOLE,
    READING_WIDTH,
    READING_ZOOM,
    READING_ZOOMED,
    reading_key,
)
from brainviewer.views.overlay import DEFAULT_ALPHA
from brainviewer.views.reading import (
    FULL_WINDOW,
    MAX_WIDTH,
    MIN_WIDTH,
    PRESET_FULL,
    PRESET_HELP,
    PRESETS,
    STYLE_FILLED,
    STYLE_OUTLINE,
    Window,
    apply_window,
    compose,
    fit_to,
    preset_window,
    reading_figure,
    zoom_box,
)
from brainviewer.views.review import ReviewView

#: The radio choice that keeps the window the sliders set.
PRESET_CUSTOM = "Custom"
#: Keyboard shortcuts of the view's buttons (Streamlit's ``shortcut=``; C and R are Streamlit's own).
SHORTCUTS = {"truth": "G", "pred": "P", "outline": "O", "reset": "W", "zoom": "Z", "whole": "A"}
UNCERTAINTY_HELP = (
    "Binary entropy of the model's tumour probability, per pixel: 0 bits where the model is sure (p near 0 or "
    "1, dark), 1 bit where it is 50/50 (yellow). It is computed from the probabilities already shown, so it "
    "costs no extra model run. It marks where to look twice (tumour borders, faint or odd tissue). It is NOT a "
    "calibrated probability of error, and low uncertainty does NOT mean correct: a model can be confidently "
    "wrong (a missed tumour or a bright artefact both look certain)."
)


def current_window(key_prefix: str, scan: np.ndarray) -> Window:
    """The window the user set in the reading view ``key_prefix`` (the preset's window for ``scan`` when a
    preset is chosen; :data:`~brainviewer.views.reading.FULL_WINDOW` before the view was shown)."""
    key = functools.partial(reading_key, key_prefix)
    preset = st.session_state.get(key(READING_PRESET), PRESET_FULL)
    if preset in PRESETS:
        return _rounded(preset_window(preset, scan))
    level, width = st.session_state.get(key(READING_LEVEL)), st.session_state.get(key(READING_WIDTH))
    if level is None or width is None:
        return FULL_WINDOW
    return Window(float(level), float(width))


def reading_view(
    scan: np.ndarray,
    gt: np.ndarray | None,
    prob: np.ndarray | None,
    threshold: float | None,
    key_prefix: str,
    *,
    pred: np.ndarray | None = None,
    alpha: float = DEFAULT_ALPHA,
    view_id: str = "",
) -> None:
    """The reading view: the large picture with its toolbar above it, and the uncertainty map on the right.

    Args:
        scan: ``(H, W, 3)`` uint8 display image (what the five panels show, e.g. ``view.panels[0].image``).
        gt: ``(H, W)`` bool ground truth, or ``None``.
        prob: ``(H, W)`` float tumour probabilities in ``[0, 1]``, or ``None`` without a model.
        threshold: the probability cut of the prediction (``None`` without a model).
        key_prefix: the page's key prefix (``READING_REVIEW`` or ``READING_PATIENT`` in ui/state.py).
        pred: the post-processed predicted mask; ``None`` cuts ``prob`` at ``threshold``.
        alpha: opacity of the filled overlays.
        view_id: what the zoom belongs to (a scan hash, a patient): a new id resets the zoom.
    """
    if pred is None and prob is not None and threshold is not None:
        pred = np.asarray(prob) >= threshold
    shape = scan.shape[:2]  # the display image may be a smaller copy of a large scan: fit the masks to it
    gt, prob, pred = fit_to(shape, gt), fit_to(shape, prob), fit_to(shape, pred)
    key = functools.partial(reading_key, key_prefix)
    for part, default in ((READING_TRUTH_ON, True), (READING_PRED_ON, True), (READING_OUTLINE_ON, False)):
        st.session_state.setdefault(key(part), default)
    st.session_state.setdefault(key(READING_ZOOMED), False)
    st.session_state.setdefault(key(READING_REVISION), 0)
    st.session_state.setdefault(key(READING_PRESET), PRESET_FULL)
    st.markdown(
        "**Reading view**",
        help="Scroll to zoom, drag to pan, double-click for the whole slice: a quick look, reset when the picture "
        "changes. Zoom to tumour stays while you change the window, the layers or the slice. Keys: "
        + ", ".join(f"{k} {what}" for what, k in SHORTCUTS.items())
        + " (when the page, not a text box, has the focus).",
    )
    picture_column, side_column = st.columns([3, 1], gap="medium")
    with picture_column:
        _reading_fragment(scan, gt, pred, key_prefix, float(alpha), view_id)
    with side_column:
        uncertainty_panel(prob)  # outside the fragment: made once per page run, not on every window move


def review_reading_view(view: ReviewView, key_prefix: str, view_id: str = "") -> None:
    """:func:`reading_view` of what a :class:`~brainviewer.views.review.ReviewView` shows (its display image,
    ground truth, probabilities, post-processed prediction and opacity): the pages' one-line hook."""
    reading_view(
        view.panels[0].image,
        view.item.truth,
        view.probs,
        view.threshold,
        key_prefix,
        pred=view.pred_mask,
        alpha=view.alpha,
        view_id=view_id,
    )


@st.fragment
def _reading_fragment(
    scan: np.ndarray,
    gt: np.ndarray | None,
    pred: np.ndarray | None,
    key_prefix: str,
    alpha: float,
    view_id: str,
) -> None:
    """The toolbar and the picture; a widget in here reruns only this function (``st.fragment``)."""
    key = functools.partial(reading_key, key_prefix)
    window = window_controls(key_prefix, scan)
    shown = [m for m, part in ((gt, READING_TRUTH_ON), (pred, READING_PRED_ON)) if st.session_state[key(part)]]
    with st.container(horizontal=True, gap="small"):
        reset_button(key_prefix)
        layer_controls(key_prefix, has_truth=gt is not None, has_pred=pred is not None)
        box = zoom_controls(key_prefix, shown if any(m is not None for m in shown) else [gt, pred], scan.shape[:2])
    picture = compose(
        apply_window(scan, window),
        gt,
        pred,
        show_truth=bool(st.session_state[key(READING_TRUTH_ON)]),
        show_pred=bool(st.session_state[key(READING_PRED_ON)]),
        style=STYLE_OUTLINE if st.session_state[key(READING_OUTLINE_ON)] else STYLE_FILLED,
        alpha=alpha,
    )
    revision = f"{key_prefix}:{view_id}:{st.session_state[key(READING_REVISION)]}"
    st.plotly_chart(
        reading_figure(picture, box, revision),
        key=key(READING_CHART),
        config={"scrollZoom": True, "displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d"]},
    )


def _rounded(window: Window) -> Window:
    """A window on the sliders' grid (level in steps of 0.5, width in steps of 1, both in range)."""
    level = float(np.clip(round(window.level * 2) / 2, 0.0, 255.0))
    return Window(level, float(np.clip(round(window.width), MIN_WIDTH, MAX_WIDTH)))


def _set(key: str, value: object) -> None:
    st.session_state[key] = value


def _flip(key: str) -> None:
    st.session_state[key] = not st.session_state.get(key, False)


def _bump_zoom(key_prefix: str, zoomed: bool) -> None:
    """Zoom to the tumour (or back to the whole slice), dropping the user's own zoom."""
    key = functools.partial(reading_key, key_prefix)
    st.session_state[key(READING_ZOOMED)] = zoomed
    st.session_state[key(READING_REVISION)] = int(st.session_state.get(key(READING_REVISION), 0)) + 1


def window_controls(key_prefix: str, scan: np.ndarray) -> Window:
    """Preset radio and level and width sliders (the reset button is :func:`reset_button`); the window to show.

    A preset writes its window (for this slice) into the sliders before they are drawn; moving a slider
    switches the radio to Custom; Reset goes back to Full range (the picture as the panels show it).
    """
    key = functools.partial(reading_key, key_prefix)
    preset = st.session_state.get(key(READING_PRESET), PRESET_FULL)
    if preset in PRESETS or key(READING_LEVEL) not in st.session_state:
        window = _rounded(preset_window(preset if preset in PRESETS else PRESET_FULL, scan))
        st.session_state[key(READING_LEVEL)], st.session_state[key(READING_WIDTH)] = window.level, window.width
    preset_column, level_column, width_column = st.columns([3, 2, 2], vertical_alignment="bottom")
    preset_column.radio(
        "Window",
        [*PRESETS, PRESET_CUSTOM],
        key=key(READING_PRESET),
        horizontal=True,
        help=" ".join(f"{name}: {text}" for name, text in PRESET_HELP.items())
        + f" {PRESET_CUSTOM}: the level and width below.",
    )
    custom = functools.partial(_set, key(READING_PRESET), PRESET_CUSTOM)
    level = level_column.slider(
        "Level (brightness)",
        0.0,
        255.0,
        step=0.5,
        key=key(READING_LEVEL),
        on_change=custom,
        help="The display value shown mid-grey; lower it to brighten the picture.",
    )
    width = width_column.slider(
        "Width (contrast)",
        MIN_WIDTH,
        MAX_WIDTH,
        step=1.0,
        key=key(READING_WIDTH),
        on_change=custom,
        help="The span of display values from black to white; narrower is more contrast.",
    )
    return Window(float(level), float(width))


def reset_button(key_prefix: str) -> None:
    """The "Reset window" button (shortcut W): back to Full range, the picture as the five panels show it."""
    key = functools.partial(reading_key, key_prefix)
    st.button(
        "Reset window",
        key=key(READING_RESET),
        on_click=_set,
        args=(key(READING_PRESET), PRESET_FULL),
        shortcut=SHORTCUTS["reset"],
        icon=":material/restart_alt:",
        help="Back to the full range: the picture as the five panels show it.",
    )


def layer_controls(key_prefix: str, has_truth: bool, has_pred: bool) -> None:
    """Buttons that show / hide the ground truth and the prediction and switch filled / outline (each
    highlighted while on, each with a keyboard shortcut)."""
    key = functools.partial(reading_key, key_prefix)
    buttons = (
        ("Ground truth", READING_TRUTH, READING_TRUTH_ON, "truth", not has_truth, "Red: the ground truth."),
        ("Prediction", READING_PRED, READING_PRED_ON, "pred", not has_pred, "Green: the model's mask."),
        ("Outline", READING_OUTLINE, READING_OUTLINE_ON, "outline", False, "Outlines only, or filled when off."),
    )
    for label, button_part, state_part, shortcut, disabled, text in buttons:
        on = bool(st.session_state[key(state_part)])
        st.button(
            label,
            key=key(button_part),
            on_click=_flip,
            args=(key(state_part),),
            type="primary" if on and not disabled else "secondary",
            icon=":material/visibility:" if on else ":material/visibility_off:",
            disabled=disabled,
            shortcut=SHORTCUTS[shortcut],
            help=f"{text} {'Shown' if on else 'Hidden'}; click or press {SHORTCUTS[shortcut]} to switch.",
        )


def zoom_controls(
    key_prefix: str, masks: list[np.ndarray | None], shape: tuple[int, int]
) -> tuple[int, int, int, int] | None:
    """The "Zoom to tumour" / "Whole slice" buttons; the box to show (``None``: the whole slice)."""
    key = functools.partial(reading_key, key_prefix)
    box = zoom_box(masks, shape)
    st.button(
        "Zoom to tumour",
        key=key(READING_ZOOM),
        on_click=_bump_zoom,
        args=(key_prefix, True),
        disabled=box is None,
        shortcut=SHORTCUTS["zoom"],
        icon=":material/zoom_in:",
        help="Zoom onto the layers shown (both when none is), with a margin around them.",
    )
    st.button(
        "Whole slice",
        key=key(READING_WHOLE),
        on_click=_bump_zoom,
        args=(key_prefix, False),
        shortcut=SHORTCUTS["whole"],
        icon=":material/zoom_out_map:",
        help="Show the whole slice again.",
    )
    return box if st.session_state.get(key(READING_ZOOMED)) else None


#: Longest side of the uncertainty panel's picture (it is shown about 250 px wide; a smaller PNG is faster).
UNCERTAINTY_SIDE_PX = 256


@st.cache_data(max_entries=16, show_spinner=False)
def _uncertainty_picture(prob: np.ndarray) -> tuple[np.ndarray, int]:
    """The entropy map coloured (at most :data:`UNCERTAINTY_SIDE_PX` a side) and its pixels at ≥ 0.5 bit,
    cached by the probabilities' content: a threshold or window move does not redraw it."""
    entropy = binary_entropy(prob)
    uncertain = int(np.count_nonzero(entropy >= UNCERTAIN_BITS))
    scale = UNCERTAINTY_SIDE_PX / max(entropy.shape)
    if scale < 1:
        size = (max(1, round(entropy.shape[1] * scale)), max(1, round(entropy.shape[0] * scale)))
        entropy = cv2.resize(entropy, size, interpolation=cv2.INTER_AREA)
    return uncertainty_rgb(entropy), uncertain


def uncertainty_panel(prob: np.ndarray | None) -> None:
    """The uncertainty map (binary entropy, viridis) with what it means and what it does not."""
    st.markdown("**Uncertainty**", help=UNCERTAINTY_HELP)
    if prob is None:
        st.caption("No prediction, so no uncertainty map.")
        return
    picture, uncertain = _uncertainty_picture(np.asarray(prob, dtype=np.float32))
    st.image(
        picture,
        caption=f"Entropy of the probability: dark sure, yellow 50/50. {uncertain:,} px at ≥ {UNCERTAIN_BITS:g} "
        "bit (p between 0.11 and 0.89). Not an error probability; sure is not the same as right.",
        width="stretch",
        output_format="PNG",
    )
