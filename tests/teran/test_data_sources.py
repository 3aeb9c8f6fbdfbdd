"""Dataset sources against small datasets written in exactly the reference layouts."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from teran.data import bottomup
from teran.data.bottomup import BottomUpFeatures
from teran.data.folder import ImageFolderCaptions, from_path

R, F = 36, 2048


def _features(feats: Path, img_id: int | str, size: tuple[int, int], seed: int) -> None:
    """Random features and pixel boxes (some past the border, to exercise clipping)."""
    rng = np.random.default_rng(seed)
    (feats / "bu_att").mkdir(parents=True, exist_ok=True)
    (feats / "bu_box").mkdir(parents=True, exist_ok=True)
    w, h = size
    x1 = rng.uniform(0, w / 2, R)
    y1 = rng.uniform(0, h / 2, R)
    boxes = np.stack([x1, y1, x1 + rng.uniform(1, w, R), y1 + rng.uniform(1, h, R)], axis=1)
    np.savez(feats / "bu_att" / f"{img_id}.npz", feat=rng.standard_normal((R, F), np.float32))
    np.save(feats / "bu_box" / f"{img_id}.npy", boxes.astype(np.float32))


def _expected(feats: Path, img_id: int | str, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    feat = np.load(feats / "bu_att" / f"{img_id}.npz")["feat"]
    boxes = np.load(feats / "bu_box" / f"{img_id}.npy") / np.array(size * 2)
    return feat, np.clip(boxes, 0, 1)


COCO_TRAIN = [101, 102, 103]
COCO_RESTVAL = [201, 202]
COCO_DEV = [301, 302]
COCO_TEST = [401, 402]


def _size(image_id: int) -> tuple[int, int]:
    return 300 + image_id, 200 + image_id


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """3 train (train2014), 2 restval + 2 dev + 2 test (val2014), 5 annotations each."""
    ann = tmp_path / "coco" / "annotations"
    ann.mkdir(parents=True)
    ann_id = 1000
    for name, groups in (
        ("train2014", {"train": COCO_TRAIN}),
        ("val2014", {"restval": COCO_RESTVAL, "dev": COCO_DEV, "test": COCO_TEST}),
    ):
        images, annotations = [], []
        for split, image_ids in groups.items():
            ids = []
            for image_id in image_ids:
                w, h = _size(image_id)
                images.append({"id": image_id, "width": w, "height": h, "file_name": "x.jpg"})
                for k in range(5):
                    ann_id += 7
                    ids.append(ann_id)
                    annotations.append(
                        {"id": ann_id, "image_id": image_id, "caption": f"img {image_id} cap {k}"}
                    )
                _features(tmp_path / "coco" / "features_36", image_id, (w, h), image_id)
            np.save(ann / f"coco_{split}_ids.npy", np.array(ids, dtype=np.int64))
        # annotations shuffled in the json: order must come from the ids files
        annotations.reverse()
        (ann / f"captions_{name}.json").write_text(
            json.dumps({"images": images, "annotations": annotations})
        )
    return tmp_path


F30K = [
    ("a.jpg", "train", (40, 30)),
    ("b.jpg", "test", (50, 20)),
    ("c.jpg", "train", (33, 44)),
    ("d.jpg", "val", (64, 48)),
    ("e.jpg", "test", (21, 37)),
    ("f.jpg", "train", (70, 10)),
]


@pytest.fixture
def f30k(tmp_path: Path) -> Path:
    """6 images in a Karpathy json (7 sentences each) with features and sizes.pkl."""
    root = tmp_path / "f30k"
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    images = []
    for i, (name, split, size) in enumerate(F30K):
        sentences = [{"raw": f"{name} sentence {k}"} for k in range(7)]
        images.append({"filename": name, "split": split, "sentences": sentences})
        _features(root / "features_36", i, size, i)
    (root / "annotations" / "dataset_flickr30k.json").write_text(json.dumps({"images": images}))
    with open(root / "images" / "sizes.pkl", "wb") as f:
        pickle.dump([size for _, _, size in F30K], f)
    return tmp_path


def test_coco_split_counts_and_restval(coco: Path) -> None:
    train = BottomUpFeatures.coco(coco, "train")
    assert [train.image_id(i) for i in range(len(train))] == [
        str(i) for i in COCO_TRAIN + COCO_RESTVAL
    ]
    plain = BottomUpFeatures.coco(coco, "train", restval=False)
    assert [plain.image_id(i) for i in range(len(plain))] == [str(i) for i in COCO_TRAIN]
    assert len(BottomUpFeatures.coco(coco, "dev")) == len(COCO_DEV)
    test = BottomUpFeatures.coco(coco, "test")
    assert [test.image_id(i) for i in range(len(test))] == [str(i) for i in COCO_TEST]
    assert train.feat_dim == F


def test_coco_dev_keeps_first_annotations(coco: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bottomup, "COCO_DEV_ANNOTATIONS", 5)
    dev = BottomUpFeatures.coco(coco, "val")
    assert len(dev) == 1 and dev.image_id(0) == str(COCO_DEV[0])


def test_coco_captions_and_regions(coco: Path) -> None:
    train = BottomUpFeatures.coco(coco, "train")
    restval_index = len(COCO_TRAIN)
    image_id = COCO_RESTVAL[0]
    assert train.captions(restval_index) == [f"img {image_id} cap {k}" for k in range(5)]
    regions = train.regions(restval_index)
    feat, boxes = _expected(coco / "coco" / "features_36", image_id, _size(image_id))
    assert regions.features.dtype == np.float32 and regions.boxes.dtype == np.float32
    np.testing.assert_array_equal(regions.features, feat)
    np.testing.assert_allclose(regions.boxes, boxes, rtol=1e-6)
    assert regions.boxes.max() == 1.0  # some boxes ran past the border and were clipped
    assert regions.boxes.min() >= 0.0


def test_coco_custom_features_root(coco: Path, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere"
    (coco / "coco" / "features_36").rename(moved)
    test = BottomUpFeatures.coco(coco, "test", features_root=moved)
    assert test.feature_path(0) == moved / "bu_att" / f"{COCO_TEST[0]}.npz"
    assert test.regions(1).features.shape == (R, F)


def test_f30k_splits_captions_and_sizes_from_pkl(f30k: Path) -> None:
    train = BottomUpFeatures.f30k(f30k, "train")
    assert [train.image_id(i) for i in range(len(train))] == ["0", "2", "5"]
    assert len(BottomUpFeatures.f30k(f30k, "dev")) == 1
    test = BottomUpFeatures.f30k(f30k, "test")
    assert [test.image_id(i) for i in range(len(test))] == ["1", "4"]
    assert test.captions(1) == [f"e.jpg sentence {k}" for k in range(5)]
    feat, boxes = _expected(f30k / "f30k" / "features_36", 4, F30K[4][2])
    np.testing.assert_array_equal(test.regions(1).features, feat)
    np.testing.assert_allclose(test.regions(1).boxes, boxes, rtol=1e-6)


def test_f30k_sizes_from_images(f30k: Path) -> None:
    images = f30k / "f30k" / "images"
    (images / "sizes.pkl").unlink()
    for name, _, size in F30K:
        Image.new("RGB", size, (10, 20, 30)).save(images / name, format="PNG")
    train = BottomUpFeatures.f30k(f30k, "train")
    assert [(im.width, im.height) for im in train.images] == [F30K[i][2] for i in (0, 2, 5)]
    _, boxes = _expected(f30k / "f30k" / "features_36", 5, F30K[5][2])
    np.testing.assert_allclose(train.regions(2).boxes, boxes, rtol=1e-6)
    (images / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"a\.jpg"):
        BottomUpFeatures.f30k(f30k, "train")


def test_f30k_sizes_pickle_cannot_run_code(f30k: Path) -> None:
    path = f30k / "f30k" / "images" / "sizes.pkl"
    with open(path, "wb") as f:
        pickle.dump([(40, 30), Path("x")], f)
    with pytest.raises(ValueError, match=r"sizes\.pkl"):
        BottomUpFeatures.f30k(f30k, "train")


def test_missing_feature_file(coco: Path) -> None:
    path = coco / "coco" / "features_36" / "bu_att" / f"{COCO_TEST[1]}.npz"
    path.unlink()
    test = BottomUpFeatures.coco(coco, "test")
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        test.regions(1)


def test_corrupt_npz(coco: Path) -> None:
    path = coco / "coco" / "features_36" / "bu_att" / f"{COCO_TEST[0]}.npz"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        BottomUpFeatures.coco(coco, "test")  # feat_dim is read from the first file
    path.write_bytes(b"garbage bytes")
    with pytest.raises(ValueError, match=re.escape(str(path))):
        BottomUpFeatures.coco(coco, "test")


def test_npz_without_feat_key(coco: Path) -> None:
    path = coco / "coco" / "features_36" / "bu_att" / f"{COCO_TEST[1]}.npz"
    np.savez(path, features=np.zeros((R, F), np.float32))
    test = BottomUpFeatures.coco(coco, "test")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*'feat'"):
        test.regions(1)


def test_wrong_feature_and_box_shapes(coco: Path) -> None:
    feats = coco / "coco" / "features_36"
    feat_path = feats / "bu_att" / f"{COCO_TEST[1]}.npz"
    np.savez(feat_path, feat=np.zeros((R, 1024), np.float32))
    test = BottomUpFeatures.coco(coco, "test")
    with pytest.raises(ValueError, match=rf"{re.escape(str(feat_path))}.*1024"):
        test.regions(1)
    box_path = feats / "bu_box" / f"{COCO_TEST[0]}.npy"
    np.save(box_path, np.zeros((R, 5), np.float32))
    with pytest.raises(ValueError, match=rf"{re.escape(str(box_path))}.*shape"):
        test.regions(0)


def test_missing_ids_and_json(coco: Path) -> None:
    ann = coco / "coco" / "annotations"
    (ann / "coco_restval_ids.npy").unlink()
    assert len(BottomUpFeatures.coco(coco, "train", restval=False)) == len(COCO_TRAIN)
    with pytest.raises(FileNotFoundError, match=re.escape(str(ann / "coco_restval_ids.npy"))):
        BottomUpFeatures.coco(coco, "train")
    (ann / "captions_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(ann / "captions_val2014.json"))):
        BottomUpFeatures.coco(coco, "test")


def test_coco_image_with_four_annotations(coco: Path) -> None:
    ids_path = coco / "coco" / "annotations" / "coco_test_ids.npy"
    ids = np.load(ids_path)
    np.save(ids_path, np.delete(ids, 3))
    with pytest.raises(ValueError, match=rf"{re.escape(str(ids_path))}.*{COCO_TEST[0]}.* 4 "):
        BottomUpFeatures.coco(coco, "test")


def test_unknown_split(coco: Path) -> None:
    with pytest.raises(ValueError, match="restval"):
        BottomUpFeatures.coco(coco, "restval")


# --- image folders ---


def _picture(path: Path, color: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 6), color if mode == "RGB" else color[0]).save(path)


def test_folder_jsonl(tmp_path: Path) -> None:
    _picture(tmp_path / "pics" / "one.png", (255, 0, 0))
    _picture(tmp_path / "two.jpg", (0, 0, 255), mode="L")
    lines = [
        {"image": "pics/one.png", "captions": [f"one {k}" for k in range(6)]},
        {"image": "two.jpg", "caption": "two 0"},
        {"image": "two.jpg", "captions": ["two 1", "two 2"]},
    ]
    path = tmp_path / "caps.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    with pytest.raises(ValueError, match=r"'two\.jpg' has 3 captions"):
        from_path(path)
    source = from_path(path, allow_fewer=True)
    assert len(source) == 2
    assert [source.image_id(0), source.image_id(1)] == ["pics/one", "two"]
    assert source.captions(0) == [f"one {k}" for k in range(5)]  # the sixth is dropped
    assert source.captions(1) == ["two 0", "two 1", "two 2", "two 0", "two 1"]
    image = source.image(1)
    assert image.mode == "RGB" and image.size == (8, 6)
    assert source.image(0).getpixel((0, 0)) == (255, 0, 0)
    three = ImageFolderCaptions.from_jsonl(path, captions_per_image=3)
    assert three.captions(1) == ["two 0", "two 1", "two 2"]


def _coco_folder(tmp_path: Path, n_captions: int = 5) -> Path:
    _picture(tmp_path / "a.png", (0, 255, 0))
    _picture(tmp_path / "sub" / "b.png", (1, 2, 3))
    images = [{"id": 7, "file_name": "sub/b.png"}, {"id": 3, "file_name": "a.png"}]
    annotations = [
        {"id": 10 + k, "image_id": image_id, "caption": f"{image_id}-{k}"}
        for k in range(n_captions)
        for image_id in (3, 7)
    ]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_folder_coco_json(tmp_path: Path) -> None:
    source = from_path(_coco_folder(tmp_path))
    assert [source.image_id(i) for i in range(len(source))] == ["sub/b", "a"]
    assert source.captions(0) == [f"7-{k}" for k in range(5)]
    assert source.image(0).getpixel((2, 2)) == (1, 2, 3)
    assert isinstance(source, ImageFolderCaptions)


def test_folder_image_with_four_captions(tmp_path: Path) -> None:
    path = _coco_folder(tmp_path, n_captions=4)
    with pytest.raises(ValueError, match=r"'sub/b\.png' has 4 captions"):
        ImageFolderCaptions.from_coco_json(path)


def test_folder_missing_image(tmp_path: Path) -> None:
    path = _coco_folder(tmp_path)
    (tmp_path / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "a.png"))):
        from_path(path)


def test_folder_corrupt_image(tmp_path: Path) -> None:
    path = _coco_folder(tmp_path)
    (tmp_path / "a.png").write_bytes(b"\x89PNG not really")
    source = from_path(path)  # decoding is lazy
    assert source.image(0).size == (8, 6)
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "a.png"))):
        source.image(1)


def test_folder_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "caps.jsonl"
    path.write_text('{"image": "../x.png", "captions": ["a"]}\n')
    with pytest.raises(ValueError, match="must be relative"):
        from_path(path, captions_per_image=1)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:1"):
        from_path(path)
    with pytest.raises(ValueError, match="unknown captions format"):
        from_path(tmp_path / "caps.csv")
