"""Dataset layouts: kaggle_3m, data_mask.csv, images/ + masks/, COCO; real data where present."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brainviewer.data.datasets import (
    DATA_MASK_COLUMNS,
    Dataset,
    DatasetError,
    load_arrays,
    open_dataset,
    rasterise_polygons,
    read_data_mask_csv,
    read_image_mask_folders,
    read_kaggle_3m,
    write_data_mask_csv,
)
from brainviewer.data.io import ScanReadError, read_mask

TUMOUR_SLICES = {4, 5, 6, 10}  # 1-based slice numbers that get a tumour in the tmp kaggle_3m set


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def save_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def slice_image(patient: int, n: int, size: int = 16) -> np.ndarray:
    """A slice whose pixel values encode (patient, slice) so a test can tell which file it got."""
    return np.full((size, size, 3), (patient, n, 200), dtype=np.uint8)


def slice_mask(n: int, size: int = 16) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    if n in TUMOUR_SLICES:
        mask[2 : 2 + n // 2, 3:9] = 255  # n // 2 rows x 6 columns
    return mask


PATIENTS = ["TCGA_AB_100_20000101", "TCGA_AB_9_20000101", "TCGA_AB_10_20000101"]
NATURAL = ["TCGA_AB_9_20000101", "TCGA_AB_10_20000101", "TCGA_AB_100_20000101"]


@pytest.fixture
def kaggle_parent(tmp_path: Path) -> Path:
    """``<tmp>/kaggle_3m/<patient>/<patient>_<n>.png`` (+ ``_mask.png``), 12 slices each, plus clutter."""
    base = tmp_path / "kaggle_3m"
    for p, patient in enumerate(PATIENTS):
        for n in range(12, 0, -1):  # written in reverse so directory order cannot help
            save_png(base / patient / f"{patient}_{n}.png", slice_image(p, n))
            save_png(base / patient / f"{patient}_{n}_mask.png", slice_mask(n))
    (base / "data.csv").write_text("Patient,grade\n")  # a stray file at the root, as in the Kaggle download
    (base / PATIENTS[0] / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (base / PATIENTS[0] / f"._{PATIENTS[0]}_1.png").write_bytes(b"\0\5\26\7 AppleDouble")  # macOS resource fork
    (base / ".ipynb_checkpoints").mkdir()
    return tmp_path


# --------------------------------------------------------------------------- kaggle_3m


def test_kaggle_3m_order_and_pairing(kaggle_parent: Path) -> None:
    for root in (kaggle_parent, kaggle_parent / "kaggle_3m"):
        dataset = open_dataset(root)
        assert dataset.kind == "kaggle_3m"
        assert len(dataset) == 36
        assert dataset.patient_ids == NATURAL
        assert [r.patient_id for r in dataset.records[::12]] == NATURAL  # records grouped patient by patient
        for pid, records in dataset.patients.items():
            assert [r.name for r in records] == [f"{pid}_{n}.png" for n in range(1, 13)]  # _2 before _10
            assert [r.index for r in records] == list(range(12))
            for n, record in enumerate(records, start=1):
                assert record.mask_path is not None and record.mask_path.name == f"{pid}_{n}_mask.png"
                assert record.mask_path.parent == record.image_path.parent
                assert record.has_ground_truth


def test_kaggle_3m_loads_the_right_pixels(kaggle_parent: Path) -> None:
    dataset = read_kaggle_3m(kaggle_parent)
    record = dataset.patients["TCGA_AB_10_20000101"][9]  # slice _10
    image, mask = load_arrays(dataset, record)
    np.testing.assert_array_equal(image[0, 0], [2, 10, 200])  # patient index 2 in PATIENTS, slice 10
    assert mask.dtype == bool and mask.sum() == 5 * 6
    tumour = [int(r.name.rsplit("_", 1)[1].split(".")[0]) for r in dataset if dataset.load_mask(r).any()]
    assert sorted(set(tumour)) == sorted(TUMOUR_SLICES) and len(tumour) == 3 * len(TUMOUR_SLICES)


def test_kaggle_3m_slice_without_mask_and_subset(kaggle_parent: Path) -> None:
    folder = kaggle_parent / "kaggle_3m" / "TCGA_AB_9_20000101"
    (folder / "TCGA_AB_9_20000101_3_mask.png").unlink()
    dataset = open_dataset(kaggle_parent)
    record = dataset.patients["TCGA_AB_9_20000101"][2]
    assert record.name == "TCGA_AB_9_20000101_3.png"
    assert record.mask_path is None and not record.has_ground_truth
    assert dataset.load_mask(record) is None
    sub = dataset.subset({"TCGA_AB_100_20000101"})
    assert sub.patient_ids == ["TCGA_AB_100_20000101"] and len(sub) == 12 and sub.kind == "kaggle_3m"


def test_mask_of_wrong_size_is_reported(kaggle_parent: Path) -> None:
    pid = "TCGA_AB_9_20000101"
    save_png(kaggle_parent / "kaggle_3m" / pid / f"{pid}_1_mask.png", np.zeros((20, 16), np.uint8))
    dataset = open_dataset(kaggle_parent)
    with pytest.raises(ScanReadError, match=r"16x20 .* its scan is 16x16"):
        load_arrays(dataset, dataset.patients[pid][0])


@pytest.mark.data
def test_real_lgg(lgg_root: Path) -> None:
    dataset = open_dataset(lgg_root)
    assert dataset.kind == "kaggle_3m"
    assert len(dataset.patients) == 88
    assert len(dataset) == 3274
    assert all(r.mask_path is not None and r.mask_path.is_file() for r in dataset)
    assert all(r.mask_path.name.startswith(r.image_path.stem + "_mask.") for r in dataset)
    for records in dataset.patients.values():
        numbers = [int(r.image_path.stem.rsplit("_", 1)[1]) for r in records]
        assert numbers == list(range(1, len(records) + 1))
    tif_patients = [pid for pid, recs in dataset.patients.items() if recs[0].image_path.suffix == ".tif"]
    assert tif_patients == [
        "TCGA_CS_4943_20000902",
        "TCGA_DU_5849_19950405",
        "TCGA_FG_5962_20000626",
        "TCGA_HT_7475_19970918",
    ]
    for pid in tif_patients:
        record = dataset.patients[pid][len(dataset.patients[pid]) // 2]
        image, mask = load_arrays(dataset, record)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert mask.shape == (256, 256) and mask.dtype == bool
    assert open_dataset(lgg_root / "kaggle_3m").records == dataset.records


# --------------------------------------------------------------------------- data_mask.csv


def test_data_mask_csv_round_trip(kaggle_parent: Path) -> None:
    folder_dataset = open_dataset(kaggle_parent)
    csv_path = write_data_mask_csv(folder_dataset, kaggle_parent / "data_mask.csv")
    rows = read_rows(csv_path)
    assert tuple(rows[0]) == DATA_MASK_COLUMNS == ("patient_id", "image_path", "mask_path", "mask")
    assert len(rows) == 36
    assert rows[0]["image_path"] == "kaggle_3m/TCGA_AB_9_20000101/TCGA_AB_9_20000101_1.png"  # relative, POSIX
    assert rows[0]["mask_path"] == "kaggle_3m/TCGA_AB_9_20000101/TCGA_AB_9_20000101_1_mask.png"
    for row in rows:
        n = int(Path(row["image_path"]).stem.rsplit("_", 1)[1])
        assert row["mask"] == ("1" if n in TUMOUR_SLICES else "0"), row

    from_csv = read_data_mask_csv(csv_path)
    assert from_csv.kind == "data_mask_csv"
    assert from_csv.records == folder_dataset.records
    assert open_dataset(csv_path).records == folder_dataset.records

    # It never overwrites, and the existing file is left as it was.
    before = csv_path.read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        write_data_mask_csv(folder_dataset, csv_path)
    assert csv_path.read_bytes() == before
    assert sorted(p.name for p in kaggle_parent.iterdir()) == ["data_mask.csv", "kaggle_3m"]  # no temp files left


def test_data_mask_csv_elsewhere_and_slices_without_masks(
    kaggle_parent: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pid = "TCGA_AB_10_20000101"
    (kaggle_parent / "kaggle_3m" / pid / f"{pid}_7_mask.png").unlink()
    folder_dataset = open_dataset(kaggle_parent / "kaggle_3m")
    other = tmp_path_factory.mktemp("indexes")
    csv_path = write_data_mask_csv(folder_dataset, other / "index.csv")
    rows = read_rows(csv_path)
    row = next(r for r in rows if r["image_path"].endswith(f"{pid}_7.png"))
    assert row["mask_path"] == "" and row["mask"] == ""
    assert all(not r["image_path"].startswith("/") for r in rows)
    back = read_data_mask_csv(csv_path)
    assert [(r.patient_id, r.index) for r in back] == [(r.patient_id, r.index) for r in folder_dataset]
    assert [r.image_path.resolve() for r in back] == [r.image_path.resolve() for r in folder_dataset]
    assert [r.mask_path.resolve() if r.mask_path else None for r in back] == [
        r.mask_path.resolve() if r.mask_path else None for r in folder_dataset
    ]
    absolute = write_data_mask_csv(folder_dataset, other / "absolute.csv", relative=False)
    assert all(Path(r["image_path"]).is_absolute() for r in read_rows(absolute))


def test_data_mask_csv_paths_from_a_notebook_and_windows(kaggle_parent: Path) -> None:
    pid = "TCGA_AB_9_20000101"
    lines = [
        ",".join(DATA_MASK_COLUMNS),
        f"{pid},/kaggle/input/lgg-mri-segmentation/kaggle_3m/{pid}/{pid}_2.png,"
        f"/kaggle/input/lgg-mri-segmentation/kaggle_3m/{pid}/{pid}_2_mask.png,0",
        f"{pid},kaggle_3m\\{pid}\\{pid}_10.png,kaggle_3m\\{pid}\\{pid}_10_mask.png,1",
    ]
    csv_path = kaggle_parent / "notebook.csv"
    csv_path.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")  # Excel-style BOM too
    dataset = read_data_mask_csv(csv_path)
    base = kaggle_parent / "kaggle_3m" / pid
    assert [r.image_path for r in dataset] == [base / f"{pid}_2.png", base / f"{pid}_10.png"]
    assert [r.mask_path for r in dataset] == [base / f"{pid}_2_mask.png", base / f"{pid}_10_mask.png"]
    assert dataset.load_mask(dataset.records[1]).sum() == 5 * 6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\n1.png,2\n", "lacks column(s) patient_id, image_path, mask_path"),
        (",".join(DATA_MASK_COLUMNS) + "\n", "lists no slices"),
        (",".join(DATA_MASK_COLUMNS) + "\nP,missing_1.png,missing_1_mask.png,0\n", "2 file(s) that do not exist"),
    ],
)
def test_bad_data_mask_csv(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "data_mask.csv"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        open_dataset(path)
    assert message in str(info.value)


def test_bad_data_mask_csv_encoding(tmp_path: Path) -> None:
    path = tmp_path / "data_mask.csv"
    path.write_bytes(b"\xff\xfe\x00\x01binary")
    with pytest.raises(DatasetError, match="not a readable UTF-8 CSV"):
        read_data_mask_csv(path)


@pytest.mark.data
def test_real_lgg_patient_to_data_mask_csv(lgg_root: Path, tmp_path: Path) -> None:
    pid = "TCGA_CS_4943_20000902"
    patient = open_dataset(lgg_root).subset([pid])
    csv_path = write_data_mask_csv(patient, tmp_path / "data_mask.csv")
    rows = read_rows(csv_path)
    assert len(rows) == 20
    # Counted independently with tifffile: slices 12..19 of this patient hold tumour.
    tumour = [int(Path(r["image_path"]).stem.rsplit("_", 1)[1]) for r in rows if r["mask"] == "1"]
    assert tumour == list(range(12, 20))
    assert {r["mask"] for r in rows} == {"0", "1"}
    back = read_data_mask_csv(csv_path)
    assert [r.image_path.resolve() for r in back] == [r.image_path.resolve() for r in patient]


# --------------------------------------------------------------------------- images/ + masks/


def test_image_mask_folders_with_a_missing_mask(tmp_path: Path) -> None:
    for n in (1, 2, 10):
        save_png(tmp_path / "images" / f"{n}.png", np.full((16, 16), n, np.uint8))
    save_png(tmp_path / "masks" / "1.png", np.pad(np.full((4, 4), 255, np.uint8), 6))
    save_png(tmp_path / "masks" / "10_mask.png", np.zeros((16, 16), np.uint8))  # the _mask naming also pairs
    dataset = open_dataset(tmp_path)
    assert dataset.kind == "image_mask_folders"
    assert [r.name for r in dataset] == ["1.png", "2.png", "10.png"]
    assert dataset.patient_ids == ["1", "2", "10"]  # each image is its own patient
    by_name = {r.name: r for r in dataset}
    assert by_name["2.png"].mask_path is None and not by_name["2.png"].has_ground_truth
    assert dataset.load_mask(by_name["1.png"]).sum() == 16
    assert not dataset.load_mask(by_name["10.png"]).any()
    np.testing.assert_array_equal(dataset.load_image(by_name["10.png"]), np.full((16, 16), 10))


def test_image_mask_folders_grouped_by_patients_csv(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        save_png(tmp_path / "images" / name, np.zeros((16, 16), np.uint8))
        save_png(tmp_path / "masks" / name, np.zeros((16, 16), np.uint8))
    (tmp_path / "patients.csv").write_text("file,patient_id\na.png,P2\nb.png,P1\nc.png,P2\n")
    dataset = read_image_mask_folders(tmp_path)
    assert dataset.patient_ids == ["P1", "P2"]
    assert [(r.patient_id, r.name, r.index) for r in dataset] == [
        ("P1", "b.png", 0),
        ("P2", "a.png", 0),
        ("P2", "c.png", 1),
    ]


def test_empty_images_folder(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="holds no images"):
        open_dataset(tmp_path)


@pytest.mark.data
def test_real_figshare(figshare_root: Path) -> None:
    dataset = open_dataset(figshare_root)
    assert dataset.kind == "image_mask_folders"
    labelled = len((figshare_root / "labels.csv").read_text().splitlines()) - 1  # one row an image, after the header
    assert len(dataset) == labelled == 564 and len(dataset.patients) == 564  # ../shared/data/README.md
    assert all(r.mask_path is not None and r.mask_path.name == r.image_path.name for r in dataset)
    assert [r.name for r in dataset.records[:3]] == ["1.png", "2.png", "3.png"]
    image, mask = load_arrays(dataset, dataset.records[0])
    assert image.shape == (512, 512) and mask.sum() == 4569


# --------------------------------------------------------------------------- COCO


def test_rasterise_polygons_areas_by_hand() -> None:
    # Box [2, 10] x [1, 4]: columns 2..9 and rows 1..3 hold their centres -> 8 x 3 = 24 pixels.
    box = rasterise_polygons(((2, 1, 10, 1, 10, 4, 2, 4),), (12, 12))
    expected = np.zeros((12, 12), bool)
    expected[1:4, 2:10] = True
    np.testing.assert_array_equal(box, expected)
    # L-shape with integer corners: 8 x 3 + 3 x 5 = 39 pixels.
    ell = rasterise_polygons(((2, 1, 10, 1, 10, 4, 5, 4, 5, 9, 2, 9),), (12, 12))
    assert ell.sum() == 39
    assert ell[8, 2] and ell[8, 4] and not ell[8, 5] and ell[3, 9] and not ell[4, 9]
    # Right triangle (0,0)-(8,0)-(0,8): row r keeps centres with c + r + 1 < 8 -> 7 + 6 + ... + 1 = 28.
    tri = rasterise_polygons(((0, 0, 8, 0, 0, 8),), (10, 10))
    assert tri.sum() == 28
    assert [int(tri[r].sum()) for r in range(10)] == [7, 6, 5, 4, 3, 2, 1, 0, 0, 0]
    # Fractional box [1.25, 4.75] x [0.5, 2.5]: centres 1.5..4.5 (4 columns) and 0.5, 1.5 (2 rows) -> 8.
    assert rasterise_polygons(((1.25, 0.5, 4.75, 0.5, 4.75, 2.5, 1.25, 2.5),), (6, 6)).sum() == 8
    # Clipped at the image border; two polygons are united; degenerate ones are ignored.
    clipped = rasterise_polygons(((-5, -5, 3, -5, 3, 2, -5, 2),), (6, 6))
    assert clipped.sum() == 3 * 2
    union = rasterise_polygons(((0, 0, 2, 0, 2, 2, 0, 2), (1, 1, 3, 1, 3, 3, 1, 3), (0, 0, 5, 5)), (6, 6))
    assert union.sum() == 4 + 4 - 1
    assert not rasterise_polygons((), (4, 4)).any()


def write_coco(folder: Path, data: dict, name: str = "_annotations.coco.json") -> Path:
    path = folder / name
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(data).encode())  # with a UTF-8 BOM, as Roboflow writes
    return path


def test_coco_polygons_boxes_and_empty_images(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "c.png"):
        save_png(tmp_path / name, np.zeros((12, 12, 3), np.uint8))
    data = {
        "images": [
            {"id": 7, "file_name": "b.png", "height": 12, "width": 12},
            {"id": 3, "file_name": "a.png", "height": 12, "width": 12},
            {"id": 9, "file_name": "c.png", "height": 12, "width": 12},
            {"id": 11, "file_name": "gone.png", "height": 12, "width": 12},  # listed but missing: skipped
        ],
        "annotations": [
            # L-shape: 39 pixels by hand (see test_rasterise_polygons_areas_by_hand)
            {"id": 1, "image_id": 3, "segmentation": [[2, 1, 10, 1, 10, 4, 5, 4, 5, 9, 2, 9]], "bbox": [2, 1, 8, 8]},
            # no polygon: the box [1, 1, 3, 2] becomes a 3 x 2 = 6 pixel rectangle
            {"id": 2, "image_id": 7, "segmentation": [], "bbox": [1, 1, 3, 2]},
            # a second annotation on the same image: the 2 x 2 box at (8, 8) adds 4 pixels
            {"id": 3, "image_id": 7, "segmentation": [[8, 8, 10, 8, 10, 10, 8, 10]], "bbox": [8, 8, 2, 2]},
        ],
        "categories": [{"id": 0, "name": "Tumor"}],
    }
    dataset = open_dataset(write_coco(tmp_path, data).parent)
    assert dataset.kind == "coco"
    assert [r.name for r in dataset] == ["a.png", "b.png", "c.png"]
    assert dataset.patient_ids == ["a", "b", "c"]
    areas = {r.name: int(dataset.load_mask(r).sum()) for r in dataset}
    assert areas == {"a.png": 39, "b.png": 6 + 4, "c.png": 0}
    assert all(r.has_ground_truth for r in dataset)  # an image without annotations is a true negative
    with pytest.raises(DatasetError, match="COCO polygons"):
        write_data_mask_csv(dataset, tmp_path / "data_mask.csv")
    assert not (tmp_path / "data_mask.csv").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"images": []}', "not a COCO file"),
        (b'{"images": [{"file_name": "x.png"}], "annotations": [{"bbox": [0, 0, 1, 1]}]}', "not a valid COCO file"),
        (b'{"images": [], "annotations": []}', "lists no images"),
    ],
)
def test_bad_coco_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "labels.json"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        open_dataset(path)


@pytest.mark.data
def test_real_coco(coco_root: Path) -> None:
    json_path = coco_root / "_annotations.coco.json"
    assert json_path.read_bytes()[:3] == b"\xef\xbb\xbf"  # the BOM this reader must cope with
    dataset = open_dataset(coco_root)
    assert dataset.kind == "coco" and len(dataset) == 215 and len(dataset.patients) == 215
    # Annotation 0: segmentation box x 323.75..435, y 231.25..307.5 on image
    # 1706_jpg.rf.004b87f63425ef145855aab826e33eee.jpg. Pixel centres inside: columns 324..434
    # (111) and rows 231..306 (76): 111 x 76 = 8436 pixels (bbox area 111.25 x 76.25 = 8482.8).
    record = next(r for r in dataset if r.name == "1706_jpg.rf.004b87f63425ef145855aab826e33eee.jpg")
    image, mask = load_arrays(dataset, record)
    assert image.shape == (640, 640, 3)
    assert mask.sum() == 8436
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (231, 306, 324, 434)
    assert mask[231:307, 324:435].all()  # a filled box


# --------------------------------------------------------------------------- open_dataset errors


def _assert_lists_layouts(message: str) -> None:
    for layout in ("kaggle_3m", "data_mask.csv", "images/ + masks/", "COCO"):
        assert layout in message, message


def test_open_dataset_rejects_what_it_cannot_read(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as info:
        open_dataset(empty)
    _assert_lists_layouts(str(info.value))

    random_file = tmp_path / "notes.txt"
    random_file.write_text("hello")
    with pytest.raises(DatasetError) as info:
        open_dataset(random_file)
    _assert_lists_layouts(str(info.value))

    pictures = tmp_path / "pictures"  # loose images, no masks anywhere: not a dataset
    save_png(pictures / "a.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DatasetError) as info:
        open_dataset(pictures)
    _assert_lists_layouts(str(info.value))

    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nowhere")
    assert issubclass(DatasetError, ValueError)


def test_dataset_is_a_plain_index(kaggle_parent: Path) -> None:
    dataset = open_dataset(kaggle_parent)
    assert isinstance(dataset, Dataset)
    assert list(dataset) == dataset.records
    assert read_mask(dataset.records[0].mask_path).shape == (16, 16)


# --------------------------------------------------------------------------- indexes stay inside their folder


def _tiny_pair(folder: Path, stem: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    image, mask = folder / f"{stem}.png", folder / f"{stem}_mask.png"
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(image)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mask)
    return image, mask


def test_a_confined_data_mask_csv_refuses_paths_outside_its_folder(tmp_path: Path) -> None:
    index = tmp_path / "ds" / "data_mask.csv"
    _tiny_pair(tmp_path / "ds" / "p1", "a")
    _, secret_mask = _tiny_pair(tmp_path / "elsewhere", "b")
    index.write_text(
        f"patient_id,image_path,mask_path,mask\np1,p1/a.png,p1/a_mask.png,0\np2,../elsewhere/b.png,{secret_mask},0\n"
    )
    assert len(open_dataset(index)) == 2  # the command line and a local app read it as before
    with pytest.raises(DatasetError, match=r"2 file\(s\) outside its own folder .*'b.png'") as err:
        open_dataset(index, confine=True)
    assert str(tmp_path) not in str(err.value)  # no server path in the message
    index.write_text("patient_id,image_path,mask_path,mask\np1,p1/a.png,p1/a_mask.png,0\n")
    assert len(open_dataset(index, confine=True)) == 1


def test_a_coco_file_name_cannot_leave_the_export(tmp_path: Path) -> None:
    _tiny_pair(tmp_path / "export", "in")
    _tiny_pair(tmp_path, "out")
    coco = tmp_path / "export" / "_annotations.coco.json"
    images = [{"id": 1, "file_name": "in.png", "width": 16, "height": 16}]
    coco.write_text(json.dumps({"images": images, "annotations": []}))
    assert len(open_dataset(coco)) == 1
    images.append({"id": 2, "file_name": "../out.png", "width": 16, "height": 16})
    coco.write_text(json.dumps({"images": images, "annotations": []}))
    with pytest.raises(DatasetError, match=r"outside its own folder \(e.g. the entry '../out.png'\)"):
        open_dataset(coco)
