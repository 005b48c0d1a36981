"""The Review page's page picker: a multi-page TIFF or an animated image shows the page (frame) the user picks,
with its mask's page, and says which is shown."""

from __future__ import annotations

import io

import numpy as np
import tifffile
from PIL import Image

APP = "../../app.py"  # AppTest resolves paths against this test file


def _tiff_pages(pages: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.stack(pages), photometric="minisblack")
    return buffer.getvalue()


def _review_upload(files: list[tuple[str, bytes, str]]):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/review.py")
    at.run()
    at.radio(key="review_source").set_value("Upload").run()
    at.file_uploader(key="review_upload").set_value(files).run()
    assert not at.exception, at.exception
    return at


def _shown_text(at) -> str:
    return "\n".join(str(e.value) for kind in ("caption", "info", "warning", "markdown") for e in at.get(kind))


def _shown_item(at):
    memo = at.session_state["_review_upload_memo"]
    return memo[1][0]


def test_a_multi_page_tiff_and_its_mask_show_the_page_picked(app_env: None) -> None:
    rng = np.random.default_rng(0)
    scans = [np.zeros((48, 48), np.uint16)] + [rng.integers(1, 4000, (48, 48), dtype=np.uint16) for _ in range(3)]
    masks = np.zeros((4, 48, 48), np.uint8)
    for page, side in ((1, 4), (2, 6), (3, 8)):
        masks[page, 10 : 10 + side, 10 : 10 + side] = 255  # a different tumour area on every page
    at = _review_upload(
        [("stack.tif", _tiff_pages(scans), "image/tiff"), ("stack_mask.tif", _tiff_pages(list(masks)), "image/tiff")]
    )
    picker = at.number_input(key="review_page_stack.tif")
    assert picker.value == 2 and picker.max == 4 and picker.label.startswith("Page of stack.tif")
    assert "page 2 of 4 is shown because page 1 is blank" in _shown_text(at)
    item = _shown_item(at)
    assert item.page == 1 and int(item.truth.sum()) == 16

    picker.set_value(4).run()
    assert not at.exception, at.exception
    item = _shown_item(at)
    assert (item.page, item.pages) == (3, 4)
    np.testing.assert_array_equal(item.image, scans[3])
    assert int(item.truth.sum()) == 64  # the mask followed the page
    assert at.number_input(key="review_page_stack.tif").value == 4
    assert "page 4 of 4 is shown" in _shown_text(at)
    assert not at.error, [e.value for e in at.error]

    at.run()  # a plain rerun keeps the pick and reads nothing again
    assert _shown_item(at) is item


def test_an_animated_image_offers_a_frame_picker_and_a_plain_image_none(app_env: None) -> None:
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)) for _ in range(5)]
    animation, png = io.BytesIO(), io.BytesIO()
    frames[0].save(
        animation, format="WEBP", save_all=True, append_images=frames[1:], duration=50, loop=0, lossless=True
    )
    frames[0].save(png, format="PNG")
    at = _review_upload([("anim.webp", animation.getvalue(), "image/webp"), ("plain.png", png.getvalue(), "image/png")])
    at.selectbox(key="review_item").set_value("anim.webp").run()
    picker = at.number_input(key="review_page_anim.webp")
    assert picker.value == 1 and picker.max == 5 and picker.label.startswith("Frame of anim.webp")
    picker.set_value(3).run()
    assert not at.exception, at.exception
    item = next(i for i in at.session_state["_review_upload_memo"][1] if i.name == "anim.webp")
    assert item.page == 2
    shown = item.image if item.image.ndim == 2 else item.image[..., 0]  # WebP frames decode as gray RGB
    np.testing.assert_array_equal(shown, np.asarray(frames[2]))
    at.selectbox(key="review_item").set_value("plain.png").run()
    assert not [n for n in at.number_input if n.key.startswith("review_page_")]
