"""tools.studies.photo_bench (``wingmark data photos``): label files, pairing, and the bench on real files
(synthetic faces rendered to PNG with their exact labels written as .pts and as menpo .ljson)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_store.geometry import tight_box
from tools.data import main as data_main
from tools.studies.photo_bench import bench_photos, find_photos, read_labels, table
from train.data.pts300w import write_pts
from train.data.scan import _MENPO_GROUPS

MODEL = "faceapi-ibug68@4.5.0"


def write_ljson(path: Path, points: np.ndarray, *, reverse_groups: bool = False) -> None:
    """menpo LJSON v3 as menpo writes image landmarks: (y, x) with pixel centres at integers, one label
    per face group; ``reverse_groups`` stores the groups' points in reverse group order."""
    groups = list(_MENPO_GROUPS.items())
    if reverse_groups:
        groups.reverse()
    order = [i for _, ibug in groups for i in ibug]
    stored = [[float(points[i, 1] - 0.5), float(points[i, 0] - 0.5)] for i in order]
    labels, start = [], 0
    for name, ibug in groups:
        labels.append({"label": name, "mask": list(range(start, start + len(ibug)))})
        start += len(ibug)
    path.write_text(
        json.dumps({"version": 3, "groups": {"LJSON": {"labels": labels, "landmarks": {"points": stored}}}})
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    from train.data.synthetic import SyntheticFaces

    folder = tmp_path_factory.mktemp("photos")
    faces = SyntheticFaces("ibug68", num=2, seed=5, image_size=256)
    truths = []
    for i in range(2):
        sample = faces[i]
        Image.fromarray(sample.image).save(folder / f"face{i}.png")
        truths.append(np.asarray(sample.points, dtype=np.float64))
    write_pts(folder / "face0.pts", truths[0])
    (folder / "sub").mkdir()
    Image.fromarray(faces[1].image).save(folder / "sub" / "face1.ppm")
    (folder / "face1.png").unlink()
    write_ljson(folder / "sub" / "face1.ljson", truths[1], reverse_groups=True)
    return folder, truths


def test_pts_and_ljson_read_the_same_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(10, 200, size=(68, 2))
    write_pts(tmp_path / "a.pts", points)
    write_ljson(tmp_path / "b.ljson", points, reverse_groups=True)
    np.testing.assert_allclose(read_labels(tmp_path / "a.pts"), points, atol=1e-3)
    np.testing.assert_allclose(read_labels(tmp_path / "b.ljson"), points, atol=1e-9)


def test_label_files_that_are_not_68_ibug_points_are_refused(tmp_path: Path) -> None:
    write_pts(tmp_path / "short.pts", np.ones((67, 2)))
    with pytest.raises(ValueError, match="expected 68 points"):
        read_labels(tmp_path / "short.pts")
    (tmp_path / "c.txt").write_text("1 2")
    with pytest.raises(ValueError, match=r"not a \.pts or \.ljson"):
        read_labels(tmp_path / "c.txt")


def test_find_photos_pairs_labels_with_images_and_says_what_is_missing(
    photos: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    folder, _ = photos
    found = find_photos(folder)
    assert [p.name for p in found] == ["face0.pts", "sub/face1.ljson"]
    assert [p.image.name for p in found] == ["face0.png", "face1.ppm"]
    with pytest.raises(FileNotFoundError, match=r"no \.pts or \.ljson"):
        find_photos(tmp_path)
    write_pts(tmp_path / "lonely.pts", np.ones((68, 2)))
    with pytest.raises(FileNotFoundError, match="no image beside it"):
        find_photos(tmp_path)


def test_bench_measures_each_photo_against_its_own_labels(photos: tuple[Path, list[np.ndarray]]) -> None:
    from runtime.landmarker import Landmarker

    folder, truths = photos
    report = bench_photos(folder, [MODEL], detectors=["dlib_hog"], predictor=None)
    entry = report["models"][MODEL]
    assert "reference_dlib_68_predictor" not in report  # no predictor file given
    # the tight figure, recomputed here from the model and the labels directly
    lm = Landmarker.from_store("faceapi-ibug68", version="4.5.0", detector=None)
    try:
        for name, truth, image in zip(
            ["face0.pts", "sub/face1.ljson"], truths, ["face0.png", "sub/face1.ppm"], strict=True
        ):
            pixels = np.asarray(Image.open(folder / image).convert("RGB"))
            points = lm.predict(pixels, tight_box(truth)[None])[0].landmarks
            expected = np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45])
            # (.pts stores 3 decimals: the figure from the file's labels moves in the 4th digit)
            assert entry["per_photo"][name]["tight"] == pytest.approx(expected, rel=1e-3)
            assert 0.0 < expected < 0.5
    finally:
        lm.close()
    mean = entry["mean"]
    assert mean["tight"]["faces"] == 2 and mean["tight"]["of"] == 2
    assert mean["tight"]["nme"] == pytest.approx(np.mean([r["tight"] for r in entry["per_photo"].values()]))
    assert set(mean) == {"tight", "hog_client_box", "detector:dlib_hog"}
    # a face no detector finds is counted as missed, never as an error
    for key in ("hog_client_box", "detector:dlib_hog"):
        found = [r[key] for r in entry["per_photo"].values() if r.get(key) is not None]
        assert mean[key]["faces"] == len(found)
    assert set(entry["regions_tight"]["face0.pts"]) == {"jaw", "brows", "nose", "eyes", "mouth"}
    assert table(report).splitlines()[2].startswith(f"| {MODEL} | {100 * mean['tight']['nme']:.2f} (2/2)")


def test_bench_refuses_a_19_point_model(photos: tuple[Path, list[np.ndarray]]) -> None:
    with pytest.raises(ValueError, match="aflw19 model"):
        bench_photos(photos[0], ["faceapi-aflw19@4.3.0"], detectors=[], predictor=None)


def test_wingmark_data_photos_writes_the_report(
    photos: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    out = tmp_path / "report.json"
    assert (
        data_main(["photos", str(photos[0]), "--models", MODEL, "--detectors", "", "--json", str(out)]) == 0
    )
    report = json.loads(out.read_text())
    assert list(report["models"]) == [MODEL] and "| tight |" in report["table_nme_percent"]
    with pytest.raises(SystemExit) as info:
        data_main(["photos", str(tmp_path / "nothing-here")])
    assert info.value.code == 2


def test_views_reach_the_model_and_its_detector_run(
    photos: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    """``--views 5``: the tight figure is the five-view facade's, the model is named with its views."""
    from runtime.landmarker import Landmarker

    folder, truths = photos
    out = tmp_path / "views.json"
    assert (
        data_main(
            ["photos", str(folder), "--models", MODEL, "--detectors", "", "--json", str(out), "--views", "5"]
        )
        == 0
    )
    (key,) = json.loads(out.read_text())["models"]
    assert key == f"{MODEL}, 5 views"
    entry = json.loads(out.read_text())["models"][key]
    with Landmarker.from_store("faceapi-ibug68", version="4.5.0", detector=None, views=5) as lm:
        pixels = np.asarray(Image.open(folder / "face0.png").convert("RGB"))
        points = lm.predict(pixels, tight_box(truths[0])[None])[0].landmarks
    expected = np.linalg.norm(points - truths[0], axis=1).mean() / np.linalg.norm(
        truths[0][36] - truths[0][45]
    )
    assert entry["per_photo"]["face0.pts"]["tight"] == pytest.approx(expected, rel=1e-3)
    one = bench_photos(folder, [MODEL], detectors=[], predictor=None)["models"][MODEL]
    assert one["per_photo"]["face0.pts"]["tight"] != pytest.approx(expected, rel=1e-4)


def test_refine_always_gives_the_client_boxes_the_second_pass(
    photos: tuple[Path, list[np.ndarray]], tmp_path: Path
) -> None:
    """``--refine always``: the tight figure is that facade's (its second pass from its own points' box);
    the model is named with it."""
    from runtime.landmarker import Landmarker

    folder, _ = photos
    truth = read_labels(folder / "face0.pts")  # as the bench reads it (the .pts file's decimals)
    out = tmp_path / "refine.json"
    args = [
        "photos",
        str(folder),
        "--models",
        MODEL,
        "--detectors",
        "",
        "--json",
        str(out),
        "--refine",
        "always",
    ]
    assert data_main(args) == 0
    ((key, entry),) = json.loads(out.read_text())["models"].items()
    assert key == f"{MODEL}, refine always"
    with Landmarker.from_store("faceapi-ibug68", version="4.5.0", detector=None, refine="always") as lm:
        pixels = np.asarray(Image.open(folder / "face0.png").convert("RGB"))
        points = lm.predict(pixels, tight_box(truth)[None])[0].landmarks
    expected = np.linalg.norm(points - truth, axis=1).mean() / np.linalg.norm(truth[36] - truth[45])
    assert entry["per_photo"]["face0.pts"]["tight"] == pytest.approx(expected, rel=1e-3)
    one = bench_photos(folder, [MODEL], detectors=[], predictor=None)["models"][MODEL]
    assert one["per_photo"]["face0.pts"]["tight"] != pytest.approx(expected, rel=1e-4)
