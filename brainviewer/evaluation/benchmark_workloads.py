"""What ``python -m brainviewer benchmark`` times: the model it loads, the phantom upload, the review
flow (or a NumPy/matplotlib stand-in without brainviewer.views.review), the forward pass, a training
step and the ONNX Runtime copy. :mod:`brainviewer.evaluation.benchmark` runs and times them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

SLICE_SIDE = 256
VOLUME_SLICES = 40
TRAIN_CROP = 128
TRAIN_BATCH = 16


def _phantom_upload(seed: int = 0) -> tuple[bytes, bytes, np.ndarray, np.ndarray]:
    """A 256x256 phantom slice and its mask, as PNG bytes and arrays."""
    from PIL import Image

    from brainviewer.data.phantom import phantom_slice

    image, mask = phantom_slice(seed=seed, size=SLICE_SIDE)
    scan_png, mask_png = io.BytesIO(), io.BytesIO()
    Image.fromarray(image).save(scan_png, format="PNG")
    Image.fromarray(mask.astype(np.uint8) * 255).save(mask_png, format="PNG")
    return scan_png.getvalue(), mask_png.getvalue(), image, mask


def load_benchmark_segmenter(spec: str | None, notes: list[str]):
    """The app's model on CPU, or an untrained resnet18 U-Net (256 input) when there are no weights."""
    from brainviewer.model.preprocessing import Preprocessing
    from brainviewer.model.segmenter import Segmenter, WeightsError, build_model
    from brainviewer.model.weights import resolve_segmenter

    try:
        segmenter = resolve_segmenter(spec, device="cpu")
        return segmenter, segmenter.source or segmenter.name, False
    except (WeightsError, FileNotFoundError) as err:
        notes.append(
            f"no trained weights ({err}); timings use an UNTRAINED resnet18 U-Net (same speed, meaningless masks)"
        )
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", in_channels=3).eval()
    return (
        Segmenter(model, Preprocessing(input_size=SLICE_SIDE), torch.device("cpu"), name="untrained"),
        "untrained Unet/resnet18",
        True,
    )


def _review_flow(notes: list[str]):
    """``(upload_to_panels, rethreshold)`` callables built on brainviewer.views.review, or stand-ins."""
    try:
        from brainviewer.views.review import render_review
        from brainviewer.views.review_sources import items_from_uploads
    except ImportError as err:
        notes.append(
            f"brainviewer.views.review is not available ({err}); "
            "the review flow was timed with a NumPy/matplotlib stand-in"
        )
        return _standin_upload_to_panels, _standin_rethreshold

    def upload_to_panels(segmenter, scan_png: bytes, mask_png: bytes) -> object:
        items, errors = items_from_uploads([("bench.png", scan_png), ("bench_mask.png", mask_png)])
        if errors or not items:
            raise RuntimeError(f"benchmark upload failed: {errors}")
        probs = segmenter.predict_probs(items[0].image)
        return render_review(items[0], probs, threshold=segmenter.prep.threshold)  # what the page shows

    def rethreshold(item_and_probs: tuple, threshold: float) -> object:
        item, probs = item_and_probs
        return render_review(item, probs, threshold=threshold)

    return upload_to_panels, rethreshold


def _figure_only(cached: tuple) -> bytes | None:
    """The five-panel figure PNG alone (the review page renders it for the download), if review exists."""
    try:
        from brainviewer.views.review import render_review
    except ImportError:
        return None
    item, probs = cached
    return render_review(item, probs, threshold=0.5).figure_png(note="benchmark")


def _standin_overlay(base: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], alpha: float = 0.4) -> np.ndarray:
    out = base.copy()
    out[mask] = np.rint((1 - alpha) * out[mask] + alpha * np.asarray(color)).astype(np.uint8)
    return out


def _standin_upload_to_panels(segmenter, scan_png: bytes, mask_png: bytes) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from brainviewer.data.io import read_image, read_mask, to_uint8

    image = read_image(scan_png, "bench.png")
    truth = read_mask(mask_png, "bench_mask.png", shape=image.shape[:2])
    probs = segmenter.predict_probs(image)
    pred = segmenter.mask_from_probs(probs)
    base = to_uint8(image)
    panels = [base, truth, _standin_overlay(base, truth, (255, 0, 0)), pred, _standin_overlay(base, pred, (0, 255, 0))]
    fig = Figure(figsize=(15, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    for ax, panel in zip(fig.subplots(1, 5), panels, strict=True):
        ax.imshow(panel, cmap="gray")
        ax.set_axis_off()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _standin_rethreshold(item_and_probs: tuple, threshold: float) -> object:
    from brainviewer.data.io import to_uint8
    from brainviewer.evaluation.metrics import slice_metrics
    from brainviewer.model.postprocess import postprocess

    (image, truth), probs = item_and_probs
    pred = postprocess(probs >= threshold)
    base = to_uint8(image)
    return (
        slice_metrics(pred, truth),
        _standin_overlay(base, truth, (255, 0, 0)),
        _standin_overlay(base, pred, (0, 255, 0)),
    )


def _training_step_fn(device: torch.device, bf16: bool | None = None):
    """One AdamW step of a fresh resnet18 U-Net on a 16 x 128 x 128 batch; bf16 autocast on CUDA, and on the
    CPU when ``bf16`` (as ``train --cpu-amp``)."""
    from brainviewer.model.segmenter import build_model
    from brainviewer.training.losses import bce_dice_loss

    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", in_channels=3).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(TRAIN_BATCH, 3, TRAIN_CROP, TRAIN_CROP, generator=generator).to(device)
    targets = (torch.rand(TRAIN_BATCH, 1, TRAIN_CROP, TRAIN_CROP, generator=generator) > 0.9).float().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" or bool(bf16)):
            logits = model(images)
        bce_dice_loss(logits.float(), targets).backward()
        optimizer.step()

    return step


def _forward_fn(segmenter, batch: int):
    size, channels = segmenter.prep.input_size, segmenter.prep.in_channels
    inputs = torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(batch))
    inputs = inputs.to(segmenter.device)
    cuda = segmenter.device.type == "cuda"
    if cuda:
        inputs = inputs.contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            segmenter.model(inputs)

    return forward


def _onnx_segmenter(base, notes: list[str]):
    """The benchmark's weights exported to ONNX and loaded in ONNX Runtime, or ``None`` (with a note)."""
    import tempfile

    try:
        import onnxruntime  # noqa: F401

        from brainviewer.model.onnx_backend import OnnxSegmenter, export_onnx
    except ImportError:
        notes.append("onnxruntime is not installed: no ONNX Runtime row (pip install onnx onnxruntime)")
        return None
    if not base.source:
        notes.append("no weights folder to export: no ONNX Runtime row")
        return None
    out = Path(tempfile.mkdtemp(prefix="brainviewer-bench-")) / "model.onnx"
    export_onnx(base.source, out, dynamo=False)
    return OnnxSegmenter.from_file(out)


def _cached_item(scan_png: bytes, mask_png: bytes, probs: np.ndarray, image: np.ndarray, truth: np.ndarray) -> tuple:
    """What the review page keeps between slider moves: the item (or image and truth) and its probabilities."""
    try:
        from brainviewer.views.review_sources import items_from_uploads
    except ImportError:
        return (image, truth), probs
    items, _ = items_from_uploads([("bench.png", scan_png), ("bench_mask.png", mask_png)])
    return items[0], probs


#: Side of the slice the reading-view rows time (the issue's responsiveness target: < 100 ms at 512x512).
READING_SIDE = 512


def reading_view_rows(segmenter) -> list[tuple[str, object, str]]:
    """``(name, fn, note)`` rows timing the server's work for one reading-view change on a 512x512 phantom slice
    (a noisy picture, so its PNG is a worst case): a window/level move (the ``st.fragment`` rerun: window LUT,
    overlays, PNG, the plotly figure as ``st.plotly_chart`` validates and serialises it) and a threshold move
    (a page rerun: re-threshold + metrics + the panels' overlays, the reading view's picture; the uncertainty
    map is cached per scan: its own row). Neither includes Streamlit's PNG encoding of the five small panels
    (the last row).
    """
    import plotly.io
    import plotly.tools

    from brainviewer.data.phantom import phantom_slice
    from brainviewer.model.uncertainty import binary_entropy, uncertainty_rgb
    from brainviewer.views.overlay import image_to_png_bytes, overview_picture
    from brainviewer.views.reading import Window, apply_window, compose, reading_figure
    from brainviewer.views.review import ReviewItem, render_review

    image, truth = phantom_slice(seed=0, size=READING_SIDE)
    item = ReviewItem("bench.png", image, truth=truth)
    probs = segmenter.predict_probs(image)
    view = render_review(item, probs, threshold=0.5)
    base = view.panels[0].image
    windows = iter(Window(float(level), 60.0) for level in np.linspace(40, 200, 10_000))
    thresholds = iter(np.linspace(0.05, 0.95, 10_000))

    def reading_picture(window: Window, pred: np.ndarray) -> str:
        figure = reading_figure(compose(apply_window(base, window), truth, pred), None, "bench")
        return plotly.io.to_json(plotly.tools.return_figure_from_figure_or_data(figure, True), validate=False)

    def window_move() -> object:
        return reading_picture(next(windows), view.pred_mask)

    def threshold_move() -> object:
        moved = render_review(item, probs, threshold=float(next(thresholds)))
        return reading_picture(Window(127.5, 255.0), moved.pred_mask)

    def uncertainty() -> object:
        return uncertainty_rgb(binary_entropy(probs))

    def panels_png() -> object:
        return [image_to_png_bytes(overview_picture(panel.image)) for panel in view.panels if panel.image is not None]

    side = f"{READING_SIDE}x{READING_SIDE}"
    return [
        (f"window/level move, reading view ({side})", window_move, "LUT + overlays + PNG + plotly JSON"),
        (f"threshold move, page + reading view ({side})", threshold_move, "re-threshold, metrics, overlays, picture"),
        (f"uncertainty map ({side})", uncertainty, "once per scan (cached): entropy + colours"),
        (f"five panels as PNG ({side})", panels_png, "what st.image encodes on a page rerun (overview size)"),
    ]
