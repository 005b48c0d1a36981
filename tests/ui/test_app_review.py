"""The Review flow: brainviewer.views.review (pure functions) and the Review page through AppTest."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from brainviewer.data.datasets import open_dataset
from brainviewer.data.io import read_image, to_uint8
from brainviewer.model.segmenter import Segmenter
from brainviewer.views.overlay import GT_COLOR, PRED_COLOR
from brainviewer.views.review import (
    SYNTHETIC_LABEL,
    ReviewItem,
    download_names,
    figure_note,
    render_review,
    threshold_view,
)
from brainviewer.views.review_sources import item_from_record, items_from_uploads, phantom_items

LGG_PATIENT = "TCGA_CS_4943_20000902"  # one of the four patients that keep the original .tif files
LGG_SLICE = 16  # its ground truth has 3,011 tumour pixels
LGG_TUMOUR_PX = 3011


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def gradient(height: int = 32, width: int = 32) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) % 256).astype(np.uint8)


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# === brainviewer.views.review: uploads =================================================================


def test_scan_and_its_mask_upload_are_paired():
    image = gradient()
    mask = square((32, 32), 4, 6, 5)
    items, errors = items_from_uploads(
        [("case_7_mask.png", png_bytes(mask.astype(np.uint8) * 255)), ("case_7.png", png_bytes(image))]
    )
    assert errors == []
    assert len(items) == 1
    item = items[0]
    assert item.name == "case_7.png" and item.source == "upload" and not item.synthetic
    assert (item.image == image).all()
    assert item.truth is not None and item.truth.sum() == 25 and (item.truth == mask).all()
    assert item.messages == []


@pytest.mark.parametrize("mask_first", [True, False])
def test_same_named_scan_and_mask_pair_by_content(mask_first: bool):
    """figshare's images/1.png + masks/1.png uploaded together: the two-valued file is the mask."""
    image, mask = gradient(), square((32, 32), 4, 6, 5)
    files = [("1.png", png_bytes(image)), ("1.png", png_bytes(mask.astype(np.uint8) * 255))]
    items, errors = items_from_uploads(files[::-1] if mask_first else files)
    assert errors == []
    assert len(items) == 1 and items[0].name == "1.png"
    assert (items[0].image == image).all() and items[0].truth is not None and (items[0].truth == mask).all()
    assert "used as the ground truth" in items[0].messages[0]


def test_two_scans_with_one_name_keep_the_first_and_say_how_to_name_a_mask():
    first, second = gradient(), gradient()[::-1].copy()
    items, errors = items_from_uploads([("a.png", png_bytes(first)), ("a.tif", png_bytes(second))])
    assert len(items) == 1 and (items[0].image == first).all() and items[0].truth is None
    assert errors == [
        "a.tif has the same name as a.png (apart from the extension), which is used instead. "
        "A ground-truth mask is recognised by its name: a_mask.tif."
    ]


def test_input_kind_note_when_the_scan_is_not_what_the_model_read_in_training():
    from brainviewer.model.preprocessing import GRAY_CHANNEL_NAME, Preprocessing
    from brainviewer.views.scan_kind import input_kind_note

    lgg, gray = Preprocessing(), Preprocessing(channel_names=[GRAY_CHANNEL_NAME] * 3)
    scan_gray = gradient()
    scan_rgb_equal = np.repeat(scan_gray[..., None], 3, axis=2)
    scan_lgg = np.stack([scan_gray, scan_gray[::-1], scan_gray.T], axis=2)
    note = input_kind_note(scan_gray, lgg, "lgg-model")
    assert note is not None and note.startswith("A grayscale scan: lgg-model was trained on 3-channel slices")
    assert "pre-contrast, FLAIR, post-contrast" in note
    assert input_kind_note(scan_rgb_equal, lgg, "m") is not None  # three equal channels are a grayscale scan
    assert input_kind_note(scan_lgg, lgg, "m") is None
    # A kaggle_3m slice with three equal channels is an LGG slice whose missing sequences repeat FLAIR
    assert input_kind_note(scan_rgb_equal, lgg, "m", channels_by_layout=True) is None
    assert input_kind_note(scan_rgb_equal, gray, "fs", channels_by_layout=True).startswith("A 3-channel scan")
    assert input_kind_note(scan_gray, lgg, "m", channels_by_layout=True) is not None  # 2-D stays grayscale
    assert input_kind_note(scan_gray, gray, "m") is None and input_kind_note(scan_rgb_equal, gray, "m") is None
    assert input_kind_note(scan_lgg, gray, "fs").startswith("A 3-channel scan: fs was trained on grayscale scans")
    assert (
        input_kind_note(scan_gray, Preprocessing(in_channels=1, mean=[0.0], std=[1.0], channel_names=["g"]), "m")
        is None
    )


def test_several_scans_come_back_in_natural_order_and_unpaired_scans_have_no_truth():
    files = [(f"s_{n}.png", png_bytes(gradient())) for n in (10, 2, 1)]
    files.append(("s_2_mask.png", png_bytes(np.zeros((32, 32), dtype=np.uint8))))
    items, errors = items_from_uploads(files)
    assert errors == []
    assert [item.name for item in items] == ["s_1.png", "s_2.png", "s_10.png"]
    assert items[0].truth is None and items[2].truth is None
    assert items[1].truth is not None and not items[1].truth.any()


def test_mask_of_another_size_is_dropped_with_a_message_and_the_scan_kept():
    items, errors = items_from_uploads(
        [("a.png", png_bytes(gradient(32, 32))), ("a_mask.png", png_bytes(np.zeros((16, 20), dtype=np.uint8)))]
    )
    assert errors == []
    assert len(items) == 1 and items[0].truth is None
    assert items[0].shape == (32, 32)
    (message,) = items[0].messages
    assert "20x16" in message and "32x32" in message and "without ground truth" in message


def test_corrupt_bytes_give_an_error_not_an_exception():
    items, errors = items_from_uploads([("broken.png", b"\x89PNG\r\n\x1a\n garbage that is not a PNG body")])
    assert items == []
    assert len(errors) == 1 and "broken.png" in errors[0] and "damaged" in errors[0]


def test_text_file_renamed_png_is_refused_with_a_message():
    items, errors = items_from_uploads(
        [("notes.png", b"patient list\nnot an image\n"), ("ok.png", png_bytes(gradient()))]
    )
    assert [item.name for item in items] == ["ok.png"]
    assert len(errors) == 1 and errors[0].startswith("notes.png")


def test_corrupt_mask_keeps_the_scan_without_truth():
    items, errors = items_from_uploads([("b.png", png_bytes(gradient())), ("b_mask.png", b"not a mask")])
    assert errors == []
    assert items[0].truth is None
    assert "b_mask.png" in items[0].messages[0] and "without ground truth" in items[0].messages[0]


def test_one_pixel_image_is_refused():
    items, errors = items_from_uploads([("dot.png", png_bytes(np.zeros((1, 1), dtype=np.uint8)))])
    assert items == []
    assert "1x1" in errors[0]


def test_sixteen_bit_tiff_is_read_as_uint16_and_displayed_as_uint8():
    image = (np.arange(40 * 48, dtype=np.uint32).reshape(40, 48) * 17 % 4096).astype(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image)
    items, errors = items_from_uploads([("t1.tif", buffer.getvalue())])
    assert errors == []
    item = items[0]
    assert item.image.dtype == np.uint16 and (item.image == image).all()
    assert item.display.dtype == np.uint8 and item.display.shape == (40, 48, 3)
    assert (item.display[..., 0] == to_uint8(image)).all()


def test_rgba_png_drops_alpha():
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (24, 20, 4), dtype=np.uint8)
    items, errors = items_from_uploads([("rgba.png", png_bytes(rgba))])
    assert errors == []
    assert items[0].image.shape == (24, 20, 3)
    assert (items[0].image == rgba[..., :3]).all()


def test_orphan_mask_and_duplicate_names_are_reported():
    items, errors = items_from_uploads(
        [
            ("x.png", png_bytes(gradient())),
            ("x.tif", png_bytes(gradient())),  # same stem as x.png: the first one wins
            ("lonely_mask.png", png_bytes(np.zeros((32, 32), dtype=np.uint8))),
        ]
    )
    assert [item.name for item in items] == ["x.png"]
    assert len(errors) == 2
    assert any("x.tif" in e and "which is used instead" in e for e in errors)
    assert any("lonely_mask.png" in e and "no scan named lonely" in e for e in errors)


def test_item_key_follows_content_and_download_names_are_safe():
    first = ReviewItem("my scan (1).png", gradient())
    same = ReviewItem("other.png", gradient())
    changed = ReviewItem("my scan (1).png", gradient() + 1)
    assert first.key == same.key
    assert first.key != changed.key
    assert download_names(first) == {
        "mask": "my_scan_1_pred_mask.png",
        "overlay": "my_scan_1_overlay.png",
        "figure": "my_scan_1_panels.png",
    }


# === brainviewer.views.review: datasets and phantoms ===================================================


def test_phantom_items_are_labelled_synthetic():
    items = phantom_items(3, size=64)
    assert len(items) == 3
    assert all(item.synthetic and item.source == SYNTHETIC_LABEL for item in items)
    assert items[0].truth is not None and items[0].truth.any()
    assert items[2].truth is not None and not items[2].truth.any()  # the last one has no tumour
    assert "SYNTHETIC PHANTOM" in figure_note(items[0], "tiny", 0.5)


def test_item_from_dataset_record(phantom_dataset):
    dataset = open_dataset(phantom_dataset)
    record = dataset.patients[dataset.patient_ids[0]][3]
    item = item_from_record(dataset, record)
    assert item.name == record.image_path.name
    assert item.patient_id == record.patient_id and item.patient_id in item.source
    assert item.image.shape == (64, 64, 3)
    assert item.truth is not None and item.truth.shape == (64, 64)
    assert not item.synthetic  # the item is a dataset file; the phantom dataset's names say PHANTOM
    assert item.channels_by_layout == (dataset.kind == "kaggle_3m")  # equal channels there are not grayscale


# === brainviewer.views.review: thresholding ============================================================


def test_threshold_view_changes_the_mask_when_the_threshold_moves():
    probs = np.linspace(0.0, 1.0, 100, dtype=np.float64).reshape(10, 10).astype(np.float32)
    low = threshold_view(probs, 0.3)
    high = threshold_view(probs, 0.7)
    # values are i / 99: >= 0.3 for i >= 30 (70 pixels), >= 0.7 for i >= 70 (30 pixels)
    assert low.pred_mask.sum() == 70 and low.areas.pred_px == 70
    assert high.pred_mask.sum() == 30 and high.areas.pred_px == 30
    assert low.metrics is None and low.areas.truth_px is None
    with pytest.raises(ValueError, match="threshold"):
        threshold_view(probs, 1.0)


def test_threshold_view_scores_against_the_truth():
    probs = np.zeros((10, 10), dtype=np.float32)
    probs[0:4, 0:4] = 0.9  # 16 predicted pixels
    truth = square((10, 10), 2, 2, 4)  # 16 true pixels, overlap rows/cols 2..3 = 4 pixels
    pred_mask, metrics, areas = threshold_view(probs, 0.5, truth)
    assert pred_mask.sum() == 16
    assert metrics is not None
    assert metrics.dice == pytest.approx(2 * 4 / 32)
    assert metrics.iou == pytest.approx(4 / 28)
    assert metrics.precision == pytest.approx(4 / 16) and metrics.recall == pytest.approx(4 / 16)
    assert metrics.accuracy == pytest.approx((100 - 24) / 100)
    assert (areas.truth_px, areas.pred_px) == (16, 16)


def test_empty_mask_gives_zero_area_and_a_defined_dice():
    probs = np.full((12, 12), 0.1, dtype=np.float32)
    truth = np.zeros((12, 12), dtype=bool)
    _, metrics, areas = threshold_view(probs, 0.5, truth)
    assert metrics is not None
    assert (areas.truth_px, areas.pred_px) == (0, 0)
    assert metrics.dice == 1.0 and metrics.iou == 1.0  # both empty: a perfect "no tumour"
    probs[0, 0] = 0.8
    _, metrics, areas = threshold_view(probs, 0.5, truth)
    assert metrics.dice == 0.0 and areas.truth_px == 0 and areas.pred_px == 1


def test_threshold_view_post_processing_drops_small_components():
    probs = np.zeros((20, 20), dtype=np.float32)
    probs[2:8, 2:8] = 0.9  # 36 pixels
    probs[15, 15] = 0.9  # 1 pixel
    assert threshold_view(probs, 0.5).areas.pred_px == 37
    assert threshold_view(probs, 0.5, min_component_px=5).areas.pred_px == 36
    probs[12:14, 2:4] = 0.9  # a second, smaller blob of 4
    assert threshold_view(probs, 0.5, keep_largest=True).areas.pred_px == 36


def test_threshold_view_scores_a_given_post_processed_mask():
    probs = np.zeros((20, 20), dtype=np.float32)
    probs[2:8, 2:8] = 0.9
    truth = np.zeros((20, 20), dtype=bool)
    truth[2:8, 2:8] = True
    volume_mask = np.zeros((20, 20), dtype=bool)  # the volume's 3-D post-processing dropped this slice's blob
    view = threshold_view(probs, 0.5, truth, pred_mask=volume_mask)
    assert view.areas.pred_px == 0 and view.metrics.dice == 0.0 and view.areas.truth_px == 36
    with pytest.raises(ValueError, match="pred_mask is"):
        threshold_view(probs, 0.5, truth, pred_mask=np.zeros((4, 4), bool))


def test_render_review_builds_five_panels_and_downloads():
    image = gradient()
    truth = square((32, 32), 8, 8, 8)
    probs = np.zeros((32, 32), dtype=np.float32)
    probs[10:20, 10:20] = 0.8
    item = ReviewItem("slice_3.png", image, truth=truth)
    view = render_review(item, probs, threshold=0.5, alpha=1.0)
    assert [panel.title for panel in view.panels] == [
        "Original",
        "Ground-truth mask",
        "Ground truth over scan",
        "Predicted mask",
        "Prediction over scan",
    ]
    assert all(panel.image is not None for panel in view.panels)
    assert view.panels[1].image.max() == 255 and (view.panels[1].image > 0).sum() == 64
    interior = (12, 12)  # inside both masks: alpha 1 gives the pure colours
    assert view.panels[2].image[interior].tolist() == list(GT_COLOR)
    assert view.panels[4].image[interior].tolist() == list(PRED_COLOR)
    assert view.areas.pred_px == 100 and view.metrics is not None
    assert view.panels[4].caption == "Green: probability ≥ 0.50"
    assert view.panels[3].caption == "Predicted: 100 px"
    mask_back = read_image(view.mask_png(), "m.png")
    assert mask_back.shape == (32, 32) and (mask_back > 0).sum() == 100
    assert read_image(view.overlay_png(), "o.png").shape == (32, 32, 3)
    assert view.figure_png(note="tiny")[:4] == b"\x89PNG"


def test_render_review_without_model_or_truth_marks_panels_unavailable():
    item = ReviewItem("lonely.png", gradient())
    view = render_review(item, None, no_prediction_reason="no trained weights present yet")
    assert view.panels[0].image is not None
    assert [panel.image for panel in view.panels[1:]] == [None, None, None, None]
    assert "No ground truth" in view.panels[1].caption
    assert view.panels[3].caption == "No prediction: no trained weights present yet"
    assert view.mask_png() is None and view.metrics is None and view.threshold is None
    assert read_image(view.overlay_png(), "o.png").shape == (32, 32, 3)  # falls back to the scan


# === The Review page (streamlit.testing AppTest) =================================================

APP = "../../app.py"  # AppTest resolves paths against this test file


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    """Nothing configured: no weights (empty weights dir), no dataset; fresh Streamlit caches."""
    import streamlit as st

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.delenv("BRAINVIEWER_WEIGHTS", raising=False)
    monkeypatch.delenv("BRAINVIEWER_DATA", raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()
    yield weights_dir
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture
def predict_calls(monkeypatch):
    """Counts Segmenter.predict_slices calls (the model forward passes of the Review page)."""
    calls = []
    original = Segmenter.predict_slices

    def counting(self, images, batch_size=8, levels=None):
        calls.append(len(images))
        return original(self, images, batch_size, levels)

    monkeypatch.setattr(Segmenter, "predict_slices", counting)
    return calls


def new_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=60)


def page_text(at) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "subheader", "title"):
        parts.extend(str(element.value) for element in at.get(kind))
    parts.extend(caption for image in at.image for caption in image.captions)
    return "\n".join(parts)


def panel_captions(at) -> list[str]:
    return [image.captions[0] for image in at.image][:5]


def metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def lgg_upload(lgg_root: Path) -> list[tuple[str, bytes, str]]:
    folder = lgg_root / "kaggle_3m" / LGG_PATIENT
    names = [f"{LGG_PATIENT}_{LGG_SLICE}.tif", f"{LGG_PATIENT}_{LGG_SLICE}_mask.tif"]
    return [(name, (folder / name).read_bytes(), "image/tiff") for name in names]


def test_first_run_with_nothing_configured_shows_the_synthetic_phantom(app_env):
    at = new_app().run()
    assert not at.exception
    text = page_text(at)
    assert "synthetic" in text.lower()
    assert "No trained weights present yet" in text
    assert at.radio(key="review_source").value == "Synthetic phantom"
    captions = panel_captions(at)
    assert len(captions) == 5
    assert "SYNTHETIC PHANTOM" in captions[0]
    assert captions[1].startswith("Ground truth:")
    assert captions[3] == "No prediction: no trained weights present yet"
    assert not at.metric  # no model: no overlap metrics
    assert at.slider(key="threshold").disabled


def test_a_grayscale_upload_to_a_model_trained_on_lgg_slices_says_so(app_env, monkeypatch, tiny_weights):
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value(("t1ce.png", png_bytes(gradient(64, 64)), "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("A grayscale scan:" in str(info.value) for info in at.info)


def test_a_scan_of_the_other_kind_offers_the_model_that_fits_in_one_click(app_env, monkeypatch, tiny_weights):
    """A grayscale upload to an LGG-style model: one button switches the sidebar to the grayscale model."""
    import shutil

    from brainviewer.model.preprocessing import GRAY_CHANNEL_NAME, Preprocessing

    gray = shutil.copytree(tiny_weights, app_env / "gray-model")
    prep = Preprocessing.load(gray)
    prep.channel_names = [GRAY_CHANNEL_NAME] * 3
    prep.save(gray)
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value(("t1ce.png", png_bytes(gradient(64, 64)), "image/png")).run()
    assert any("A grayscale scan:" in str(info.value) for info in at.info)
    button = at.button(key="use_fitting_model")
    assert button.label == "Use gray-model for this scan"
    button.click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="model_choice").value == "gray-model"
    assert not any("A grayscale scan:" in str(info.value) for info in at.info)
    assert not [b for b in at.button if b.key == "use_fitting_model"]


def test_configuring_a_dataset_while_the_phantom_is_shown_switches_to_it(app_env, phantom_dataset):
    at = new_app().run()
    assert at.radio(key="review_source").value == "Synthetic phantom"
    at.text_input(key="dataset_path_input").set_value(str(phantom_dataset)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="review_source").value == "Dataset sample"
    # a source the user picks afterwards stays picked
    at.radio(key="review_source").set_value("Synthetic phantom").run()
    at.run()
    assert at.radio(key="review_source").value == "Synthetic phantom"


def test_upload_of_a_real_lgg_slice_shows_panels_and_metrics_and_rethresholds_without_the_model(
    app_env, monkeypatch, tiny_weights, lgg_root, predict_calls
):
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    files = lgg_upload(lgg_root)
    image = read_image(files[0][1], files[0][0])
    probs = Segmenter.from_folder(tiny_weights, device="cpu").predict_probs(image)
    predict_calls.clear()

    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    predict_calls.clear()  # the first run predicted the default phantom slice
    at.file_uploader(key="review_upload").set_value(files).run()
    assert not at.exception
    assert not at.error
    captions = panel_captions(at)
    assert len(captions) == 5
    assert captions[1] == f"Ground truth: {LGG_TUMOUR_PX:,} px"
    assert captions[4] == "Green: probability ≥ 0.50"
    shown = metrics(at)
    assert {"Dice", "IoU", "Precision", "Recall", "Pixel accuracy"} <= set(shown)
    assert shown["Truth area (px)"] == f"{LGG_TUMOUR_PX:,}"
    assert shown["Predicted area (px)"] == f"{int((probs >= 0.5).sum()):,}"
    assert shown["Difference (px)"] == f"{int((probs >= 0.5).sum()) - LGG_TUMOUR_PX:+,}"
    buttons = at.get("download_button")
    assert [button.key for button in buttons] == ["download_mask", "download_overlay", "download_panels"]
    assert not any(button.proto.disabled for button in buttons)
    assert len(predict_calls) == 1

    at.slider(key="threshold").set_value(0.9).run()
    assert not at.exception
    assert len(predict_calls) == 1  # the slider re-cuts cached probabilities
    assert panel_captions(at)[4] == "Green: probability ≥ 0.90"
    assert metrics(at)["Predicted area (px)"] == f"{int((probs >= 0.9).sum()):,}"

    at.slider(key="opacity").set_value(0.8).run()
    assert not at.exception and len(predict_calls) == 1


def test_corrupt_upload_shows_an_error_and_keeps_the_page_working(app_env, lgg_root):
    files = [
        ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "image/png"),
        ("readme.png", b"this is a text file", "image/png"),
        *lgg_upload(lgg_root),
    ]
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value(files).run()
    assert not at.exception
    errors = [error.value for error in at.error]
    assert len(errors) == 2
    assert any("broken.png" in e for e in errors) and any("readme.png" in e for e in errors)
    assert len(panel_captions(at)) == 5  # the good slice is still reviewed
    assert panel_captions(at)[1] == f"Ground truth: {LGG_TUMOUR_PX:,} px"


def test_only_a_corrupt_upload_shows_its_error_and_no_panels(app_env):
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value([("bad.tif", b"II*\x00garbage", "image/tiff")]).run()
    assert not at.exception
    assert len(at.error) == 1 and "bad.tif" in at.error[0].value
    assert panel_captions(at) == []


def test_mask_of_the_wrong_size_is_reported_and_the_scan_shown(app_env, lgg_root):
    scan = lgg_upload(lgg_root)[0]
    small_mask = png_bytes(np.zeros((128, 128), dtype=np.uint8))
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value(
        [scan, (f"{LGG_PATIENT}_{LGG_SLICE}_mask.png", small_mask, "image/png")]
    ).run()
    assert not at.exception
    warnings = " ".join(warning.value for warning in at.warning)
    assert "128x128" in warnings and "without ground truth" in warnings
    captions = panel_captions(at)
    assert len(captions) == 5 and captions[1].startswith("No ground truth")


def test_dataset_sample_is_the_default_source_when_a_dataset_is_configured(
    app_env, monkeypatch, phantom_dataset, tiny_weights
):
    monkeypatch.setenv("BRAINVIEWER_DATA", str(phantom_dataset))
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    at = new_app().run()
    assert not at.exception
    assert at.radio(key="review_source").value == "Dataset sample"
    dataset = open_dataset(phantom_dataset)
    patient = dataset.patient_ids[0]
    assert at.selectbox(key="review_patient").value == patient
    # opens on the slice with the largest ground truth
    areas = [int(dataset.load_mask(record).sum()) for record in dataset.patients[patient]]
    best = int(np.argmax(areas))
    assert any(dataset.patients[patient][best].name in str(element.value) for element in at.markdown)
    assert panel_captions(at)[1] == f"Ground truth: {areas[best]:,} px"
    assert "Dice" in metrics(at)


def test_corrupt_weights_give_a_warning_and_the_review_goes_on(app_env, monkeypatch, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"_model_class": "Unet", "encoder_name": "resnet18"}))
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(broken))
    at = new_app().run()
    assert not at.exception
    warnings = " ".join(warning.value for warning in at.warning)
    assert "broken-model" in warnings and "corrupt" in warnings
    captions = panel_captions(at)
    assert len(captions) == 5
    assert captions[3] == "No prediction: the model could not be loaded"


def test_a_cpu_training_run_makes_the_app_keep_to_the_cores_it_leaves(app_env, monkeypatch, tiny_weights, tmp_path):
    """Training and serving on the same cores both crawl: while a CPU run trains, the app's torch
    threads drop to what training leaves (at least one), the sidebar says so, and they come back after."""
    import socket
    import subprocess
    import sys

    import torch

    from brainviewer import runs
    from brainviewer.training.config import TrainConfig
    from brainviewer.ui import sidebar as ui

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)  # record, do not change the test process
    monkeypatch.setattr(torch, "get_num_threads", lambda: calls[-1] if calls else ui._DEFAULT_TORCH_THREADS)
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("BRAINVIEWER_RUNS_DIR", str(runs_dir))
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "brainviewer-test"])
    try:
        run_dir = runs_dir / "busy"
        run_dir.mkdir(parents=True)
        TrainConfig(data="/data/x", run_name="busy", device="cpu", threads=1).save(run_dir / "config.json")
        status = {"state": "running", "pid": trainer.pid, "host": socket.gethostname()}
        (run_dir / "status.json").write_text(json.dumps(status))
        at = new_app().run()
        assert not at.exception
        want = runs.serving_threads(1, ui._DEFAULT_TORCH_THREADS)
        assert "A training run is using the CPU, so the model here runs on" in page_text(at)
        assert calls == ([want] if want != ui._DEFAULT_TORCH_THREADS else [])
    finally:
        trainer.kill()
        trainer.wait(10)
    import streamlit as st

    st.cache_data.clear()  # the 5-second cache of the training threads
    at = new_app().run()
    assert "A training run is using the CPU" not in page_text(at)
    assert (calls[-1] if calls else ui._DEFAULT_TORCH_THREADS) == ui._DEFAULT_TORCH_THREADS


def test_a_tumour_free_slice_predicted_empty_shows_n_a_not_1(app_env, monkeypatch, tiny_weights):
    """No tumour in the truth and none predicted: Dice, IoU, precision and recall read n/a, not 1.000."""
    monkeypatch.setenv("BRAINVIEWER_WEIGHTS", str(tiny_weights))
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    scan = np.stack([gradient(64, 64)] * 3, axis=-1)
    at.file_uploader(key="review_upload").set_value(
        [
            ("healthy.png", png_bytes(scan), "image/png"),
            ("healthy_mask.png", png_bytes(np.zeros((64, 64), np.uint8)), "image/png"),
        ]
    ).run()
    at.slider(key="threshold").set_value(at.slider(key="threshold").max).run()
    assert not at.exception, [e.value for e in at.exception]
    cards = {m.label: m.value for m in at.metric}
    if cards.get("Predicted area (px)") != "0":
        pytest.skip("the untrained test model predicts tumour even at the highest threshold")
    for name in ("Dice", "IoU", "Precision", "Recall"):
        assert cards[name] == "n/a", (name, cards)
    assert cards["Truth area (px)"] == "0"


def upload(name: str, image: np.ndarray) -> tuple[str, bytes, str]:
    return (name, png_bytes(image), "image/png")


def test_adding_a_scan_to_an_upload_shows_the_new_scan(app_env):
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value([upload("a.png", gradient())]).run()
    assert not at.exception, [e.value for e in at.exception]
    at.file_uploader(key="review_upload").set_value(
        [upload("a.png", gradient()), upload("b.png", gradient()[::-1].copy())]
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="review_item").value == "b.png"
    assert "b.png" in page_text(at) and not at.error


def test_the_same_file_uploaded_twice_is_read_once_without_an_error(app_env):
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value([upload("a.png", gradient()), upload("a.png", gradient())]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert not [s for s in at.selectbox if s.key == "review_item"]  # one scan: no picker
    assert len(panel_captions(at)) == 5


def test_previous_and_next_move_between_uploaded_scans_and_wrap_around(app_env):
    at = new_app().run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value(
        [upload(f"{name}.png", gradient() + step) for step, name in enumerate("abc")]
    ).run()
    assert at.selectbox(key="review_item").value == "a.png"
    seen = []
    for key in ("review_next", "review_next", "review_next", "review_prev", "review_prev"):
        at.button(key=key).click().run()
        assert not at.exception, [e.value for e in at.exception]
        seen.append(at.selectbox(key="review_item").value)
    assert seen == ["b.png", "c.png", "a.png", "c.png", "b.png"]
    assert "b.png" in page_text(at)
