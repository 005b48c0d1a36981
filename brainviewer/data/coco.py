"""The COCO reader: a COCO JSON export (Roboflow and others) as a :class:`~brainviewer.data.datasets.Dataset`.

Each image is its own patient; its polygons (or boxes) become the mask when it is loaded
(:func:`~brainviewer.data.datasets.rasterise_polygons`). A ``file_name`` may not leave the export's folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from brainviewer.data.datasets import Dataset, DatasetError, SliceRecord, inside_folder, outside_error
from brainviewer.data.io import natural_key

logger = logging.getLogger(__name__)


def find_coco_json(root: Path) -> Path | None:
    if root.is_file() and root.suffix == ".json":
        return root
    candidates = sorted(root.glob("_annotations.coco.json")) + sorted(root.glob("*/_annotations.coco.json"))
    return candidates[0] if candidates else None


def _coco_polygons(annotations: list[dict]) -> dict[int, list[tuple[float, ...]]]:
    """Image id -> its polygons (flat x, y lists); a box stands in where there is no polygon."""
    polys: dict[int, list[tuple[float, ...]]] = {}
    for ann in annotations:
        seg = ann.get("segmentation")
        shapes: list[tuple[float, ...]] = []
        if isinstance(seg, list) and seg:
            shapes = [tuple(map(float, p)) for p in seg if isinstance(p, list) and len(p) >= 6]
        if not shapes and ann.get("bbox"):
            x, y, w, h = map(float, ann["bbox"])
            shapes = [(x, y, x + w, y, x + w, y + h, x, y + h)]
        polys.setdefault(int(ann["image_id"]), []).extend(shapes)
    return polys


def read_coco(json_path: str | Path) -> Dataset:
    """Index a COCO JSON export; each image is its own patient; polygons become masks.

    Boxes without polygons are used as rectangles. The file may start with a UTF-8 BOM.
    """
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise DatasetError(f"{json_path} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
        raise DatasetError(f"{json_path} is not a COCO file (it needs 'images' and 'annotations' lists).")
    if not isinstance(data["annotations"], list):
        raise DatasetError(f"{json_path}: 'annotations' must be a list of COCO annotations.")
    try:
        polys = _coco_polygons(data["annotations"])
        images = sorted(data["images"], key=lambda im: natural_key(str(im["file_name"])))
        records = []
        # a COCO file_name is relative to its export: '../' or an absolute path never belongs there
        names = [str(im["file_name"]) for im in images]
        outside = [name for name in names if not inside_folder(json_path.parent / name, json_path.parent)]
        for image in images:
            path = json_path.parent / str(image["file_name"])
            if outside:
                break
            if not path.is_file():
                logger.warning("COCO image %s is listed but missing", path)
                continue
            shapes = tuple(polys.get(int(image["id"]), []))
            records.append(SliceRecord(Path(str(image["file_name"])).stem, path, None, 0, shapes))
    except (KeyError, TypeError, ValueError) as err:
        raise DatasetError(
            f"{json_path} is not a valid COCO file ({type(err).__name__}: {err}). Each image needs 'id' and "
            "'file_name'; each annotation 'image_id' and 'segmentation' polygons or a 'bbox'."
        ) from err
    if outside:
        raise outside_error(json_path, len(outside), outside[0])
    if not records:
        raise DatasetError(f"{json_path} lists no images that exist beside it.")
    return Dataset(json_path, "coco", records)
