"""The Review flow as plain functions: scans in, thresholded predictions and panels out.

No Streamlit here: :mod:`brainviewer.ui.review` and ``pages/review.py`` call these and show the
results. Everything a slider moves (threshold, opacity) is computed from cached
probabilities by :func:`render_review` without calling the model again. The items come from
:mod:`brainviewer.views.review_sources`.

Typical use::

    items, errors = items_from_uploads([(name, content), ...])  # brainviewer.views.review_sources
    probs = segmenter.predict_probs(items[0].image)           # once per scan and model
    view = render_review(items[0], probs, threshold=0.5)      # on every slider move
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from brainviewer.evaluation.metrics import SliceMetrics, slice_metrics
from brainviewer.model.postprocess import postprocess
from brainviewer.views import display_copy
from brainviewer.views.overlay import (
    DEFAULT_ALPHA,
    DEFAULT_DISPLAY_CHANNEL,
    GT_COLOR,
    PANEL_TITLES,
    PRED_COLOR,
    display_rgb,
    five_panel_figure,
    image_to_png_bytes,
    mask_display,
    mask_to_png_bytes,
    overlay,
)

logger = logging.getLogger(__name__)

#: Source label of synthetic phantom slices (shown on every picture made from them).
SYNTHETIC_LABEL = "SYNTHETIC PHANTOM"
NO_TRUTH_TEXT = "No ground truth"
NO_PREDICTION_TEXT = "No prediction"


@dataclass(eq=False)
class ReviewItem:
    """One scan to review.

    Attributes:
        name: the scan's file name (used for titles and download names).
        image: ``(H, W)`` or ``(H, W, 3)`` scan (uint8, uint16 or float32).
        truth: ``(H, W)`` bool ground truth, or ``None`` when there is none.
        source: where it came from, for people ("upload", "dataset ...", "SYNTHETIC PHANTOM").
        synthetic: ``True`` for generated phantom slices (never real patients).
        messages: notes about this item for the user, e.g. a mask that was dropped and why.
        patient_id: the patient it belongs to, when known.
        page, pages: the 0-based page (or frame) shown of a multi-page or animated file, and how many it has.
        shrunk: display copies of a large scan (:mod:`brainviewer.views.display_copy`), made once per item.
        channels_by_layout: ``True`` for a slice of a dataset layout whose slices are 3-channel by definition
            (``kaggle_3m``: LGG repeats FLAIR where a sequence is missing), so three equal channels there are
            not a grayscale scan.
    """

    name: str
    image: np.ndarray
    truth: np.ndarray | None = None
    source: str = "upload"
    synthetic: bool = False
    messages: list[str] = field(default_factory=list)
    patient_id: str | None = None
    page: int = 0
    pages: int = 1
    shrunk: dict = field(default_factory=dict, repr=False)
    channels_by_layout: bool = False

    @property
    def stem(self) -> str:
        """File-name-safe stem of :attr:`name` (for download file names)."""
        stem = Path(self.name).stem or "scan"
        return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "scan"

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` of the scan."""
        return (int(self.image.shape[0]), int(self.image.shape[1]))

    @cached_property
    def key(self) -> str:
        """Content hash of the scan (dtype, shape and pixels): the cache key of its probabilities."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(f"{self.image.dtype.str}{self.image.shape}".encode())
        digest.update(np.ascontiguousarray(self.image))  # the pixels' buffer, not a copy of them
        return digest.hexdigest()

    @cached_property
    def display(self) -> np.ndarray:
        """The scan as ``(H, W, 3)`` uint8 RGB for display (computed once)."""
        return display_rgb(self.image)


@dataclass(frozen=True)
class Areas:
    """Tumour areas in pixels; ``truth_px`` is ``None`` without ground truth."""

    truth_px: int | None
    pred_px: int


class ThresholdView(NamedTuple):
    """A thresholded prediction: the mask, its metrics against the truth (or ``None``), and areas."""

    pred_mask: np.ndarray
    metrics: SliceMetrics | None
    areas: Areas


def threshold_view(
    probs: np.ndarray,
    threshold: float,
    truth: np.ndarray | None = None,
    min_component_px: int = 0,
    keep_largest: bool = False,
    pred_mask: np.ndarray | None = None,
) -> ThresholdView:
    """Cut probabilities into a mask, post-process it, and score it. No model call.

    Args:
        probs: ``(H, W)`` float probabilities in ``[0, 1]``.
        threshold: pixels with ``probs >= threshold`` are tumour; in ``(0, 1)``.
        truth: ``(H, W)`` bool ground truth, or ``None``.
        min_component_px: drop predicted components smaller than this (0 keeps all).
        keep_largest: keep only the largest predicted component.
        pred_mask: an ``(H, W)`` bool mask already cut and post-processed from these ``probs`` (one
            slice of a volume's prediction, where 3-D post-processing needs the neighbouring slices);
            scored as given instead of cutting ``probs`` again.

    Returns:
        :class:`ThresholdView` ``(pred_mask (H, W) bool, SliceMetrics | None, Areas)``.

    Raises:
        ValueError: threshold outside ``(0, 1)`` or truth of another size.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    if pred_mask is None:
        pred_mask = postprocess(np.asarray(probs) >= threshold, min_component_px, keep_largest)
    elif pred_mask.shape != np.shape(probs):
        raise ValueError(f"pred_mask is {pred_mask.shape} but the probabilities are {np.shape(probs)}")
    else:
        pred_mask = pred_mask.astype(bool, copy=False)
    if truth is None:
        return ThresholdView(pred_mask, None, Areas(None, int(np.count_nonzero(pred_mask))))
    metrics = slice_metrics(pred_mask, truth)
    return ThresholdView(pred_mask, metrics, Areas(metrics.truth_area_px, metrics.pred_area_px))


@dataclass(frozen=True)
class Panel:
    """One picture of the review row; ``image`` is ``None`` for an unavailable panel."""

    title: str
    image: np.ndarray | None
    caption: str


@dataclass
class ReviewView:
    """Everything the Review page shows for one scan at one threshold and opacity.

    Attributes:
        item: the scan.
        panels: the five panels (see :data:`brainviewer.views.overlay.PANEL_TITLES`).
        threshold: the probability cut used (``None`` without a model).
        alpha: overlay opacity.
        pred_mask: ``(H, W)`` bool prediction, or ``None`` without a model.
        metrics: metrics against the truth, or ``None`` (no truth or no model).
        areas: tumour areas in pixels.
        probs: the probabilities the prediction came from, or ``None``.
        display_channel: the channel shown for 3-channel scans (``None`` = RGB).
        shown: ``(h, w)`` the panels of a large scan are drawn at (its display copy), or ``None`` (full size).
    """

    item: ReviewItem
    panels: list[Panel]
    threshold: float | None
    alpha: float
    pred_mask: np.ndarray | None
    metrics: SliceMetrics | None
    areas: Areas
    probs: np.ndarray | None = None
    display_channel: int | None = None
    shown: tuple[int, int] | None = None

    @property
    def display_note(self) -> str | None:
        """For a scan drawn from its display copy, the sentence saying so; else ``None``."""
        return None if self.shown is None else display_copy.display_note(self.item.shape, self.shown)

    @property
    def display_probs(self) -> np.ndarray | None:
        """``probs`` at the panels' size (shrunk for a large scan), or ``None`` without a model."""
        shrink = self.probs is not None and self.shown is not None
        return display_copy.shrink_picture(self.probs, self.shown) if shrink else self.probs

    def score_cards(self) -> list[MetricCard]:
        """The score cards as text (``n/a`` where a ratio is undefined, see :func:`score_cards`); empty
        without metrics."""
        return [] if self.metrics is None else score_cards(self.metrics)

    def area_cards(self) -> list[MetricCard]:
        """The area cards as text (see :func:`area_cards`); empty without metrics."""
        return [] if self.metrics is None else area_cards(self.metrics)

    def mask_png(self) -> bytes | None:
        """The predicted mask as a {0, 255} PNG at the scan's size, or ``None``."""
        return None if self.pred_mask is None else mask_to_png_bytes(self.pred_mask)

    def overlay_png(self) -> bytes:
        """The prediction overlay (or, without a model, the ground-truth overlay / scan) as PNG."""
        for panel_index in (4, 2, 0):
            image = self.panels[panel_index].image
            if image is not None:
                return image_to_png_bytes(image)
        return image_to_png_bytes(self.item.display)  # unreachable: panel 0 always exists

    def figure_png(self, note: str = "") -> bytes:
        """The five-panel figure (with the probability map when there is one) as PNG."""
        return five_panel_figure(
            self.item.image,
            self.item.truth,
            self.pred_mask,
            probs=self.probs,
            alpha=self.alpha,
            note=note,
            heading=self.item.name,
            display_channel=self.display_channel,
        )


#: What a score card shows when its ratio has nothing to divide by (e.g. Dice on a tumour-free slice).
NOT_APPLICABLE = "n/a"


class MetricCard(NamedTuple):
    """One metric card of the Review page: its label, the value as shown, and the help text."""

    label: str
    value: str
    help: str


def score_cards(m: SliceMetrics) -> list[MetricCard]:
    """The five score cards (Dice, IoU, precision, recall, pixel accuracy) of ``m`` as text.

    A ratio with nothing to divide by is shown as ``n/a`` with the reason, not as the 1.000 the metric
    functions return: Dice and IoU when neither truth nor prediction has tumour (a tumour-free slice
    predicted empty), precision without predicted pixels, recall without ground-truth tumour.
    """
    both_empty = m.truth_area_px == 0 and m.pred_area_px == 0
    no_overlap_reason = "n/a: no tumour in the ground truth or the prediction, so there is no overlap to score."
    cards = [
        MetricCard(
            "Dice",
            NOT_APPLICABLE if both_empty else f"{m.dice:.3f}",
            no_overlap_reason if both_empty else "2|P∩T| / (|P|+|T|).",
        ),
        MetricCard(
            "IoU",
            NOT_APPLICABLE if both_empty else f"{m.iou:.3f}",
            no_overlap_reason if both_empty else "|P∩T| / |P∪T|.",
        ),
        MetricCard(
            "Precision",
            NOT_APPLICABLE if m.pred_area_px == 0 else f"{m.precision:.3f}",
            "n/a: nothing was predicted as tumour, so there is no predicted pixel to be right or wrong."
            if m.pred_area_px == 0
            else "Share of predicted pixels that are tumour.",
        ),
        MetricCard(
            "Recall",
            NOT_APPLICABLE if m.truth_area_px == 0 else f"{m.recall:.3f}",
            "n/a: the ground truth has no tumour on this slice, so there is nothing to find."
            if m.truth_area_px == 0
            else "Share of tumour pixels that were found.",
        ),
        MetricCard("Pixel accuracy", f"{m.accuracy:.4f}", "Share of all pixels labelled right (mostly background)."),
    ]
    return cards


def area_cards(m: SliceMetrics) -> list[MetricCard]:
    """The area cards (truth, predicted, difference in pixels) of ``m`` as text."""
    return [
        MetricCard("Truth area (px)", f"{m.truth_area_px:,}", "Ground-truth tumour pixels."),
        MetricCard("Predicted area (px)", f"{m.pred_area_px:,}", "Predicted tumour pixels at this threshold."),
        MetricCard("Difference (px)", f"{m.pred_area_px - m.truth_area_px:+,}", "Predicted minus ground-truth area."),
    ]


def download_names(item: ReviewItem) -> dict[str, str]:
    """File names for the downloads of ``item``: keys ``mask``, ``overlay``, ``figure``."""
    return {
        "mask": f"{item.stem}_pred_mask.png",
        "overlay": f"{item.stem}_overlay.png",
        "figure": f"{item.stem}_panels.png",
    }


def render_review(
    item: ReviewItem,
    probs: np.ndarray | None,
    threshold: float = 0.5,
    alpha: float = DEFAULT_ALPHA,
    min_component_px: int = 0,
    keep_largest: bool = False,
    pred_mask: np.ndarray | None = None,
    no_prediction_reason: str = "no model loaded",
    display_channel: int | None = DEFAULT_DISPLAY_CHANNEL,
    no_truth_hint: str = "upload <scan>_mask.<ext> with the scan",
) -> ReviewView:
    """Threshold cached ``probs`` and build the five panels for ``item``. No model call.

    Args:
        item: the scan and its ground truth.
        probs: ``(H, W)`` probabilities at the scan's size, or ``None`` (no model).
        threshold: probability cut in ``(0, 1)``.
        alpha: overlay opacity in ``[0, 1]``.
        min_component_px, keep_largest: post-processing of the thresholded mask.
        pred_mask: the slice's already post-processed mask (see :func:`threshold_view`), or ``None``.
        no_prediction_reason: shown on the prediction panels when ``probs`` is ``None``.
        display_channel: for 3-channel scans, the channel shown in grayscale under the overlays
            (default FLAIR); ``None`` shows the three channels as RGB.
        no_truth_hint: how to get ground truth, shown on the overlay panel when ``item`` has none.

    Returns:
        :class:`ReviewView`.
    """
    shown = display_copy.display_shape(item.shape)  # None, or the (h, w) the panels of a large scan are drawn at
    if shown is None:
        base = item.display if display_channel is None else display_rgb(item.image, display_channel)
    else:
        base = display_copy.shrunk_base(item.image, display_channel, shown, item.shrunk)
    truth = item.truth
    if probs is not None and tuple(probs.shape) != item.shape:
        raise ValueError(f"probabilities are {probs.shape} but the scan is {item.shape}")
    if probs is None:
        pred_mask, metrics = None, None
        areas = Areas(None if truth is None else int(np.count_nonzero(truth)), 0)
    else:
        pred_mask, metrics, areas = threshold_view(
            probs, threshold, truth, min_component_px, keep_largest, pred_mask=pred_mask
        )
    size = f"{item.shape[1]}×{item.shape[0]} px" + ("" if shown is None else f", drawn at {shown[1]}×{shown[0]}")
    # the panels of a large scan come from its display copy; the metrics and areas above stay at full resolution
    truth_shown = truth if shown is None or truth is None else display_copy.shrunk_truth(truth, shown, item.shrunk)
    pred_shown = pred_mask if shown is None or pred_mask is None else display_copy.shrink_mask(pred_mask, shown)
    if truth is None:
        truth_panels = [
            Panel(PANEL_TITLES[1], None, f"{NO_TRUTH_TEXT} for this scan"),
            Panel(PANEL_TITLES[2], None, f"{NO_TRUTH_TEXT}: {no_truth_hint}" if no_truth_hint else NO_TRUTH_TEXT),
        ]
    else:
        truth_panels = [
            Panel(PANEL_TITLES[1], mask_display(truth_shown), f"Ground truth: {areas.truth_px:,} px"),
            Panel(PANEL_TITLES[2], overlay(base, truth_shown, GT_COLOR, alpha, True, base), "Red: ground truth"),
        ]
    if pred_mask is None:
        pred_panels = [
            Panel(PANEL_TITLES[3], None, f"{NO_PREDICTION_TEXT}: {no_prediction_reason}"),
            Panel(PANEL_TITLES[4], None, f"{NO_PREDICTION_TEXT}: {no_prediction_reason}"),
        ]
    else:
        pred_panels = [
            Panel(PANEL_TITLES[3], mask_display(pred_shown), f"Predicted: {areas.pred_px:,} px"),
            Panel(
                PANEL_TITLES[4],
                overlay(base, pred_shown, PRED_COLOR, alpha, True, base),
                f"Green: probability ≥ {threshold:.2f}",
            ),
        ]
    if item.image.ndim == 2:
        channels = "grayscale"
    elif display_channel is None:
        channels = "3 channels as RGB"
    else:
        channels = f"channel {display_channel + 1} of 3"
    original_caption = f"{size}, {channels}" + (f" · {SYNTHETIC_LABEL}" if item.synthetic else "")
    panels = [Panel(PANEL_TITLES[0], base, original_caption), *truth_panels, *pred_panels]
    return ReviewView(
        item=item,
        panels=panels,
        threshold=None if probs is None else threshold,
        alpha=alpha,
        pred_mask=pred_mask,
        metrics=metrics,
        areas=areas,
        probs=probs,
        display_channel=display_channel,
        shown=shown,
    )


def figure_note(
    item: ReviewItem, model_label: str | None, threshold: float | None, gate_note: str | None = None
) -> str:
    """The footer of the five-panel figure: synthetic label, model name, threshold and, for a slice the
    tumour-present gate called tumour-free, what it decided (``gate_note``)."""
    parts = []
    if item.synthetic:
        parts.append(f"{SYNTHETIC_LABEL}: not a real scan")
    parts.append(f"Model: {model_label}" if model_label else "No model loaded")
    if threshold is not None and model_label:
        parts.append(f"threshold {threshold:.2f}")
    if gate_note and model_label:
        parts.append(gate_note)
    parts.append(f"source: {item.source}")
    return " · ".join(parts)
