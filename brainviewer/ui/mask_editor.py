"""Correct the predicted mask over the scan (Review and Patients pages) and save it to the corrections dataset.

The drawing surface is ``streamlit-drawable-canvas`` (0.13, a Streamlit components-v2 widget; checked with
the pinned Streamlit in headless Chromium: background image shown, strokes returned as ``image_data``).
Paint and erase are free-hand strokes; *Remove component* takes a click (a canvas point) and removes the
connected component under it. The canvas stays mounted while the user paints and erases: each run applies
the strokes of its ``json_data`` not applied yet, one undo step each (:mod:`brainviewer.views.mask_edit`),
so strokes drawn while the app reruns are applied at the next run instead of being lost. The canvas is
remounted empty over the updated mask only on Undo, Reset and Remove component (the buttons sit below it,
so the strokes it holds are applied before they act; Save applies them too). Undo keeps
:data:`~brainviewer.views.mask_edit.HISTORY_LIMIT` steps.

Saving writes the scan, the corrected mask and a provenance record into the corrections folder
(:mod:`brainviewer.data.corrections`), never over an earlier save: that one moves to the patient's
``.history`` folder, and a save of the mask already saved writes nothing. In a public demo
(``BRAINVIEWER_DEMO=1``) nothing is saved on the server: the corrected mask can be downloaded instead.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from brainviewer.data.corrections import SourceScan, corrections_root, mask_png, save_correction
from brainviewer.data.datasets import Dataset
from brainviewer.data.volumes import Volume
from brainviewer.evaluation.metrics import slice_metrics
from brainviewer.ui.server_files import demo_mode
from brainviewer.ui.sidebar import ModelState
from brainviewer.ui.state import MASK_EDIT_CANVAS_KEY, MASK_EDIT_FLASH_KEY, MASK_EDIT_KEY, MASK_EDIT_REV_KEY
from brainviewer.views.mask_edit import ERASE, PAINT, MaskEdit, path_mask
from brainviewer.views.overlay import PRED_COLOR, display_rgb, overlay
from brainviewer.views.review import ReviewItem

logger = logging.getLogger(__name__)

TOOL_PAINT = "Paint"
TOOL_ERASE = "Erase"
TOOL_REMOVE = "Remove component"
TOOLS = (TOOL_PAINT, TOOL_ERASE, TOOL_REMOVE)
#: The canvas's side on screen (the longer side of the scan is scaled to it): 448 px fits the editor beside
#: the sidebar in an 820 px wide window (512 overflowed it by ~40 px, the canvas toolbar over its right edge).
CANVAS_SIDE = 448
#: Edits kept per session (one per scan and prediction); the oldest are dropped.
MAX_EDITS = 8
STROKE_COLORS = {TOOL_PAINT: "#00ff00", TOOL_ERASE: "#ff00ff"}


def review_source(item: ReviewItem, dataset: Dataset | None = None) -> SourceScan:
    """Where a Review scan came from: a dataset slice (with its path), a synthetic phantom or an upload."""
    if item.synthetic:
        return SourceScan(item.name, item.patient_id, "", "phantom")
    if dataset is not None and item.patient_id in dataset.patients:
        for record in dataset.patients[item.patient_id]:
            if record.image_path.name == item.name:
                return SourceScan(item.name, item.patient_id, str(record.image_path), "dataset")
    return SourceScan(item.name, item.patient_id, "", "upload")


def volume_source(volume: Volume, index: int, synthetic: bool = False) -> SourceScan:
    """Where slice ``index`` of a Patients-page volume came from (its path inside the dataset, when it has one)."""
    path = volume.slice_paths[index] if volume.slice_paths else ""
    name = Path(path).name if path else f"{volume.patient_id}_{index + 1}"
    kind = "phantom" if synthetic else ("dataset" if path else volume.source_kind)
    return SourceScan(name, volume.patient_id, path, kind)


def canvas_scale(shape: tuple[int, int], side: int = CANVAS_SIDE) -> float:
    """Screen pixels per scan pixel that fit the scan's longer side to ``side``."""
    return side / max(shape)


def edit_key(item: ReviewItem, pred_mask: np.ndarray, model_id: str | None) -> str:
    """The edit's identity: the scan's content, the predicted mask and the model (a new threshold or model
    starts a new edit from its prediction; going back returns to the earlier edit)."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{item.key}|{model_id}|{pred_mask.shape}".encode())
    digest.update(np.packbits(pred_mask, axis=None).tobytes())
    return digest.hexdigest()


def _edits() -> dict[str, MaskEdit]:
    return st.session_state.setdefault(MASK_EDIT_KEY, {})


def _store(key: str, edit: MaskEdit) -> None:
    edits = _edits()
    edits.pop(key, None)
    edits[key] = edit
    while len(edits) > MAX_EDITS:
        edits.pop(next(iter(edits)))


def _bump() -> None:
    """Remount the canvas empty (its key carries a revision) over the current mask, at the next run."""
    st.session_state[MASK_EDIT_REV_KEY] = int(st.session_state.get(MASK_EDIT_REV_KEY, 0)) + 1
    st.session_state.pop(MASK_EDIT_CANVAS_KEY, None)


def _mounted(key: str, edit: MaskEdit) -> dict:
    """The canvas of this edit: its key, how many of its objects are applied, and the mask its background
    shows (kept while it is mounted, so the background sent to the browser does not change under the strokes)."""
    state = st.session_state.get(MASK_EDIT_CANVAS_KEY)
    if not state or state["edit"] != key:
        if state:
            _bump()
        rev = int(st.session_state.get(MASK_EDIT_REV_KEY, 0))
        state = {"key": f"mask_canvas_{rev}", "edit": key, "applied": 0, "shown": edit.mask}
        st.session_state[MASK_EDIT_CANVAS_KEY] = state
    return state


def _background(item: ReviewItem, mask: np.ndarray, channel: int | None, size: tuple[int, int]) -> Image.Image:
    """The scan with the edited mask in green (filled and outlined), scaled to the canvas ``size`` (w, h)."""
    picture = overlay(display_rgb(item.image, channel), mask, PRED_COLOR, 0.35, contour=True)
    return Image.fromarray(picture).resize(size, Image.Resampling.NEAREST)


def _clicked_pixel(json_data: dict | None, scale: float, shape: tuple[int, int]) -> tuple[int, int] | None:
    """The scan pixel ``(row, col)`` of the last point clicked on the canvas, or ``None``."""
    objects = (json_data or {}).get("objects") or []
    if not objects:
        return None
    point = objects[-1]
    radius = float(point.get("radius", 0)) * float(point.get("scaleX", 1))
    offset = 0.0 if point.get("originX") == "center" else radius
    x, y = float(point.get("left", 0)) + offset, float(point.get("top", 0)) + offset
    row, col = int(y / scale), int(x / scale)
    if not (0 <= row < shape[0] and 0 <= col < shape[1]):
        return None
    return row, col


def _canvas(item: ReviewItem, edit: MaskEdit, mounted: dict, tool: str, brush: int, channel: int | None):
    """The drawing canvas over the scan; its result (strokes and clicks since it was mounted)."""
    from streamlit_drawable_canvas import st_canvas  # registers its component when the app runs

    scale = canvas_scale(edit.shape)
    width, height = round(edit.shape[1] * scale), round(edit.shape[0] * scale)
    remove = tool == TOOL_REMOVE
    return st_canvas(
        fill_color="rgba(255, 0, 0, 0.6)",
        stroke_width=max(1, round(brush * scale)),
        stroke_color=STROKE_COLORS.get(tool, "#ff0000"),
        background_image=_background(item, mounted["shown"], channel, (width, height)),
        update_streamlit=True,
        height=height,
        width=width,
        drawing_mode="point" if remove else "freedraw",
        point_display_radius=4,
        key=mounted["key"],
    ), scale


def _apply_canvas(key: str, edit: MaskEdit, mounted: dict, result, scale: float) -> MaskEdit:
    """Apply the canvas's strokes and clicks not applied yet, one undo step each, in the order drawn; the
    edit after them. A click removes a component and remounts the canvas (to show the mask without it)."""
    objects = (result.json_data or {}).get("objects") or [] if result is not None else []
    if len(objects) < mounted["applied"]:  # the canvas's own undo took back strokes already applied
        mounted["applied"] = len(objects)
    new, clicked = edit, False
    for obj in objects[mounted["applied"] :]:
        kind = str(obj.get("type", "")).lower()  # fabric 6 writes "Path" and "Circle"
        if kind == "path":
            mode = ERASE if obj.get("stroke") == STROKE_COLORS[TOOL_ERASE] else PAINT
            new = new.apply(path_mask(obj, scale, edit.shape), mode)
        elif kind == "circle":
            clicked = True
            pixel = _clicked_pixel({"objects": [obj]}, scale, edit.shape)
            removed = new.remove_component_at(*pixel) if pixel is not None else new
            if removed is new:
                st.session_state[MASK_EDIT_FLASH_KEY] = (
                    "info",
                    "No tumour in the mask there: click inside a green component to remove it.",
                )
            new = removed
    mounted["applied"] = len(objects)
    if new is not edit:
        _store(key, new)
    if clicked:
        _bump()
        st.rerun()
    return new


def _save(item: ReviewItem, edit: MaskEdit, model: ModelState, threshold: float | None, source: SourceScan) -> None:
    root = corrections_root()
    try:
        saved = save_correction(
            root, source, item.image, edit.base_mask, edit.mask, {"label": model.label, "id": model.model_id}, threshold
        )
    except (ValueError, OSError) as err:
        logger.exception("saving a correction failed")
        st.session_state[MASK_EDIT_FLASH_KEY] = ("error", f"Could not save the correction: {err}")
        return
    where = f"{saved.mask.parent.name}/{saved.mask.name}"
    if saved.unchanged:
        st.session_state[MASK_EDIT_FLASH_KEY] = ("info", f"Nothing saved: {where} in {root} already holds this mask.")
        return
    pixels = saved.record["pixels"]
    kept = saved.record.get("previous") or {}
    earlier = f" The earlier save is kept as {kept['mask']}." if kept.get("mask") else ""
    st.session_state[MASK_EDIT_FLASH_KEY] = (
        "success",
        f"Saved {where} (+{pixels['added']:,} / −{pixels['removed']:,} px) in {root}.{earlier} "
        "Open that folder as a dataset, or train on it from the Fine-tuning page.",
    )


def truth_note(edit: MaskEdit, truth: np.ndarray | None) -> str:
    """`` · Dice with the ground truth: prediction x → corrected y.`` when the scan has ground truth, else ``.``."""
    if truth is None or truth.shape != edit.shape:
        return "."
    before, after = slice_metrics(edit.base_mask, truth), slice_metrics(edit.mask, truth)
    return f" · Dice with the ground truth: prediction {before.dice:.3f} → corrected {after.dice:.3f}."


def _flash() -> None:
    message = st.session_state.pop(MASK_EDIT_FLASH_KEY, None)
    if message is not None:
        getattr(st, message[0])(message[1])


def mask_editor(
    item: ReviewItem,
    pred_mask: np.ndarray | None,
    model: ModelState,
    threshold: float | None,
    source: SourceScan,
    channel: int | None = None,
) -> None:
    """A toggle "Correct the mask" that opens the editor: tools, brush size, the canvas over the scan, undo,
    reset, save and download of the corrected mask.

    Args:
        item: the scan shown (``item.image`` is saved with the correction).
        pred_mask: ``(H, W)`` bool mask the model predicted at ``threshold`` (``None``: nothing to correct).
        model: the model that predicted it (label and id go into the provenance).
        threshold: the probability threshold of the prediction.
        source: where the scan came from (name, patient, server path for a dataset slice).
        channel: the channel shown of a 3-channel scan (``None``: RGB).
    """
    if pred_mask is None:
        return
    on = st.toggle(
        "Correct the mask",
        key="mask_edit_on",
        help="Paint, erase or remove pieces of the predicted mask over the scan, and save the corrected mask to "
        "the corrections dataset (the Fine-tuning page can train on it).",
    )
    if not on:
        return
    key = edit_key(item, pred_mask, model.model_id)
    edit = _edits().get(key) or MaskEdit.start(pred_mask)
    if key not in _edits():
        _store(key, edit)
    demo = demo_mode()
    with st.container(border=True):
        _flash()
        left, right = st.columns([3, 2], vertical_alignment="bottom")
        tool = left.radio(
            "Tool",
            TOOLS,
            horizontal=True,
            key="mask_edit_tool",
            help="Paint adds tumour, Erase removes it (drag on the scan); Remove component removes the "
            "connected piece of the mask you click.",
        )
        brush = right.slider("Brush (scan pixels)", 1, 40, 6, key="mask_edit_brush", disabled=tool == TOOL_REMOVE)
        mounted = _mounted(key, edit)
        result, scale = _canvas(item, edit, mounted, tool, brush, channel)
        edit = _apply_canvas(key, edit, mounted, result, scale)
        added, removed = edit.changes()
        st.caption(
            f"Green: the corrected mask ({int(edit.mask.sum()):,} px; strokes show in green and magenta until "
            f"Undo or Reset redraws it) · against the prediction at threshold "
            f"{threshold if threshold is None else f'{threshold:.2f}'}: +{added:,} px added, −{removed:,} px removed"
            + truth_note(edit, item.truth)
        )
        # below the canvas (and its toolbar): the canvas's strokes are applied before these act
        with st.container(horizontal=True, gap="small"):
            if st.button("Undo", key="mask_edit_undo", disabled=not edit.can_undo, icon=":material/undo:"):
                _store(key, edit.undo())
                _bump()
                st.rerun()
            if st.button("Reset", key="mask_edit_reset", disabled=not edit.edited, help="Back to the prediction."):
                _store(key, edit.reset())
                _bump()
                st.rerun()
            if st.button(
                "Save correction",
                key="mask_edit_save",
                type="primary",
                disabled=demo,
                icon=":material/save:",
                help="Public demo: nothing is saved on the server; download the mask instead."
                if demo
                else f"Writes the scan, the corrected mask and a provenance record into {corrections_root()} "
                "(an earlier save of this slice is kept in its patient's .history folder).",
            ):
                _save(item, edit, model, threshold, source)
                st.rerun()  # not remounted: a new canvas reruns the app once more, which would drop the message
            st.download_button(
                "Corrected mask",
                data=mask_png(edit.mask),
                file_name=f"{item.stem}_corrected_mask.png",
                mime="image/png",
                key="mask_edit_download",
                on_click="ignore",
                icon=":material/download:",
            )
