from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store.geometry import tight_box
from train.data.aflw import AflwFull, load_aflw_full, read_aflw_info
from train.data.pts300w import EXPECTED_SIZES, load_300w, read_pts, write_pts
from train.data.types import LandmarkDataset

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_pts_is_one_based_and_round_trips(tmp_path):
    # A hand-written file: the point "21 11" (1-based) is the pixel at column 20, row 10, whose centre
    # in the model_store convention is (20.5, 10.5).
    path = tmp_path / "a.pts"
    path.write_text("version: 1\nn_points:  2\n{\n21 11\n1.0 1.0\n}\n")
    pts = read_pts(path)
    assert pts.dtype == np.float32
    np.testing.assert_allclose(pts, [[20.5, 10.5], [0.5, 0.5]])
    write_pts(tmp_path / "b.pts", pts)
    assert (tmp_path / "b.pts").read_text().splitlines()[:4] == [
        "version: 1",
        "n_points:  2",
        "{",
        "21.000 11.000",
    ]
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), pts)
    # Windows line endings and scientific notation occur in the wild.
    path.write_text("version: 1\r\nn_points: 1\r\n{\r\n2.1e1 1.1E1\r\n}\r\n")
    np.testing.assert_allclose(read_pts(path), [[20.5, 10.5]])


def test_malformed_pts_is_rejected(tmp_path):
    path = tmp_path / "bad.pts"
    path.write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n")
    with pytest.raises(ValueError, match="n_points is 3"):
        read_pts(path)
    path.write_text("hello")
    with pytest.raises(ValueError, match="not an iBUG"):
        read_pts(path)


@pytest.mark.parametrize(
    ("split", "subsets"),
    [
        ("train", ["lfpw/trainset", "helen/trainset", "afw"]),
        ("common", ["lfpw/testset", "helen/testset"]),
        ("challenging", ["ibug"]),
        ("full", ["lfpw/testset", "helen/testset", "ibug"]),
        ("test600", ["300w/01_indoor", "300w/02_outdoor"]),
    ],
)
def test_300w_splits_follow_the_protocol(split, subsets):
    ds = load_300w(FIXTURES / "300w", split)
    assert isinstance(ds, LandmarkDataset)
    assert ds.scheme == "ibug68" and ds.name == f"300w-{split}"
    assert [s.meta["subset"] for s in ds] == subsets
    s = ds[0]
    assert s.image.dtype == np.uint8 and s.image.ndim == 3 and s.image.shape[2] == 3
    assert s.points.shape == (68, 2) and s.points.dtype == np.float32
    np.testing.assert_allclose(s.box, tight_box(s.points), atol=1e-5)
    assert Path(s.meta["path"]).exists()
    assert getattr(ds, "expected_size", None) == EXPECTED_SIZES[split]


def test_300w_points_match_the_fixture_pixels():
    """In the lossless fixtures the pixel under point 30 is pure magenta: the 1-based .pts value
    read as x - 0.5 falls inside exactly that pixel."""
    checked = 0
    for split in ("train", "common", "test600"):
        for s in load_300w(FIXTURES / "300w", split):
            if not s.meta["path"].endswith(".png"):
                continue
            img = s.image.astype(int)
            ys, xs = np.nonzero((img[..., 0] == 255) & (img[..., 1] == 0) & (img[..., 2] == 255))
            assert (len(xs), len(ys)) == (1, 1)
            assert (int(s.points[30, 0]), int(s.points[30, 1])) == (xs[0], ys[0])
            checked += 1
    assert checked == 4


def test_300w_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_300w(tmp_path, "challenging")
    with pytest.raises(ValueError, match="unknown 300-W split"):
        load_300w(tmp_path, "val")
    # A partial copy (only AFW) still loads its part of the training split and says what is missing.
    (tmp_path / "AFW").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "AFW" / "x.jpg")
    write_pts(tmp_path / "AFW" / "x.pts", np.zeros((68, 2)))
    ds = load_300w(tmp_path, "train")
    assert len(ds) == 1 and ds.missing == ("lfpw/trainset", "helen/trainset")  # type: ignore[attr-defined]


def test_aflw_info_structure():
    info = read_aflw_info(FIXTURES / "aflw" / "AFLWinfo_release.mat")
    pts, boxes = np.asarray(info["points"]), np.asarray(info["boxes"])
    assert pts.shape == (5, 19, 2) and boxes.shape == (5, 4)
    np.testing.assert_array_equal(info["order"], [2, 0, 4, 1, 3])
    assert info["names"][1] == "0/image00004.jpg"
    # The fixture's boxes are the points' tight box grown by 4 px: x1 < min x, x2 > max x, same for y.
    np.testing.assert_allclose(boxes[:, :2], pts.min(axis=1) - 4, atol=1e-4)
    np.testing.assert_allclose(boxes[:, 2:], pts.max(axis=1) + 4, atol=1e-4)
    assert not np.asarray(info["visible"])[1, 2] and np.asarray(info["visible"])[0].all()


def test_aflw_splits_and_samples():
    mat, images = FIXTURES / "aflw" / "AFLWinfo_release.mat", FIXTURES / "aflw" / "flickr"
    train = AflwFull(mat, images, "train", train_count=3)
    test = AflwFull(mat, images, "test", train_count=3)
    assert (len(train), len(test)) == (3, 2)
    assert [s.meta["index"] for s in train] == [2, 0, 4] and [s.meta["index"] for s in test] == [1, 3]
    s = test[0]
    assert isinstance(test, LandmarkDataset) and s.scheme == "aflw19" and test.name == "aflw-full-test"
    assert s.image.shape == (72, 72, 3) and s.points.shape == (19, 2)
    assert s.meta["path"].endswith("0/image00004.jpg") and not s.meta["visible"][3]
    np.testing.assert_allclose(s.meta["tight_box"], tight_box(s.points), atol=1e-5)
    # The standard split of the real file: the first 20,000 of ra train, the rest test.
    assert len(load_aflw_full(mat, images, "train")) == 5
    assert len(load_aflw_full(mat, images, "test")) == 0
    with pytest.raises(ValueError, match="split"):
        AflwFull(mat, images, "val")


def test_aflw_21_point_variant_drops_the_ears(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    xy = rng.uniform(10, 60, size=(2, 21, 2))
    data = np.concatenate([xy[..., 0], xy[..., 1]], axis=1)  # [2, 42]: 21 x then 21 y
    names = np.empty((2, 1), dtype=object)
    names[0, 0], names[1, 0] = np.array(["a.jpg"]), np.array(["b.jpg"])
    savemat(tmp_path / "info.mat", {"data": data, "bbox": np.ones((2, 4)), "nameList": names, "ra": [[1, 2]]})
    info = read_aflw_info(tmp_path / "info.mat")
    keep = [i for i in range(21) if i not in (12, 16)]  # ears: points 13 and 17, 1-based
    np.testing.assert_allclose(np.asarray(info["points"]), xy[:, keep] - 0.5, atol=1e-5)
    savemat(
        tmp_path / "bad.mat",
        {"data": np.zeros((2, 10)), "bbox": np.ones((2, 4)), "nameList": names, "ra": [[1, 2]]},
    )
    with pytest.raises(ValueError, match="columns"):
        read_aflw_info(tmp_path / "bad.mat")


def test_wflw_line_format_and_convention():
    from train.data.wflw import parse_wflw_line

    coords = np.arange(196, dtype=float) / 4
    line = " ".join(f"{v:g}" for v in coords) + " 10 20 110 140 1 0 0 1 0 0 7--Cheering/7_x.jpg"
    rec = parse_wflw_line(line)
    assert rec.points.shape == (98, 2)
    np.testing.assert_allclose(rec.points[1], [0.5 + 0.5, 0.75 + 0.5])  # 0-based -> corner origin
    np.testing.assert_allclose(rec.box, [10.5, 20.5, 110.5, 140.5])
    assert rec.attributes == {
        "pose": True, "expression": False, "illumination": False, "makeup": True, "occlusion": False,
        "blur": False,
    }  # fmt: skip
    assert rec.name == "7--Cheering/7_x.jpg"
    with pytest.raises(ValueError, match="207 fields"):
        parse_wflw_line("1 2 3 x.jpg")


def test_wflw_splits_and_samples():
    from train.data.wflw import WFLW98, load_wflw

    root = FIXTURES / "wflw"
    train, test = load_wflw(root, "train"), load_wflw(root, "test")
    assert (len(train), len(test)) == (2, 1)
    assert len(load_wflw(root, "test_blur")) == 1 and len(load_wflw(root, "test_pose")) == 0
    s = train[1]
    assert s.scheme == "wflw98" and s.points.shape == (98, 2) and s.image.shape == (72, 72, 3)
    assert s.meta["attr_pose"] and s.meta["attr_occlusion"] and not s.meta["attr_blur"]
    # The fixture box is the points' box grown by 3 px and rounded.
    assert np.all(s.box[:2] <= s.points.min(axis=0)) and np.all(s.box[2:] >= s.points.max(axis=0))
    assert WFLW98.num_points == 98 and WFLW98.normaliser_indices == (60, 72)
    with pytest.raises(ValueError, match="unknown WFLW split"):
        load_wflw(root, "val")


def test_wflw_flip_pairs_agree_with_ibug68():
    """Mirroring a face and then laying out its 98 points equals laying out first and mirroring
    with the wflw98 permutation (the fixture layout is interpolated from the 68 iBUG points)."""
    from model_store.geometry import flip_points
    from model_store.schemes import IBUG68
    from tests.fixtures.make_fixtures import wflw98_from_ibug68
    from train.data.wflw import WFLW98

    p68 = np.random.default_rng(0).uniform(0, 100, size=(68, 2))
    a = wflw98_from_ibug68(flip_points(p68, 100.0, IBUG68))
    b = flip_points(wflw98_from_ibug68(p68), 100.0, WFLW98)
    # The brows' lower edges carry a +1 px offset in y only, which mirroring keeps: exact equality.
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert sorted(WFLW98.flip_permutation.tolist()) == list(range(98))


def test_wflw_ibug68_selection_inverts_the_fixture_layout_and_keeps_mirror_pairs():
    """The fixture's 98 points are laid out from 68 iBUG points: selecting them back is exact, and the
    selection commutes with mirroring (the wflw98 and ibug68 flip tables agree on the chosen points)."""
    from model_store.geometry import flip_points
    from model_store.schemes import IBUG68
    from tests.fixtures.make_fixtures import wflw98_from_ibug68
    from train.data.wflw import IBUG68_FROM_WFLW98, WFLW98, ibug68_from_wflw98

    assert len(IBUG68_FROM_WFLW98) == 68 and len(set(IBUG68_FROM_WFLW98)) == 68
    p68 = np.random.default_rng(1).uniform(0, 100, size=(68, 2))
    np.testing.assert_array_equal(ibug68_from_wflw98(wflw98_from_ibug68(p68)), p68)
    p98 = np.random.default_rng(2).uniform(0, 100, size=(98, 2))
    np.testing.assert_allclose(
        ibug68_from_wflw98(flip_points(p98, 100.0, WFLW98)),
        flip_points(ibug68_from_wflw98(p98), 100.0, IBUG68),
    )


@pytest.mark.parametrize("scheme", ["ibug68", "aflw19"])
def test_wflw_is_a_dataset_kind_in_the_training_schemes(scheme):
    from model_store.meanshape import aflw19_from_68
    from train.data.wflw import ibug68_from_wflw98, load_wflw
    from train.dataset import load_samples

    root = FIXTURES / "wflw"
    samples = load_samples({"kind": "wflw", "root": str(root), "split": "train", "workers": 0}, scheme)
    native = list(load_wflw(root, "train"))
    assert len(samples) == len(native) == 2
    for s, n in zip(samples, native, strict=True):
        assert (
            s.scheme == scheme and s.meta["from"] == "wflw98" and s.meta["attr_pose"] == n.meta["attr_pose"]
        )
        expected = ibug68_from_wflw98(n.points)
        if scheme == "aflw19":
            expected = aflw19_from_68(expected)
        np.testing.assert_allclose(s.points, expected, atol=1e-5)
        np.testing.assert_array_equal(s.box, n.box)  # WFLW's own face box
        np.testing.assert_array_equal(s.image, n.image)
    with pytest.raises(ValueError, match="not 'wflw68'"):
        load_wflw(root, "train", "wflw68")
