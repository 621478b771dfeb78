"""tools.studies.yaw_errors: the per-|yaw| table on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.studies.yaw_errors import yaw_error_table
from train.data.real import REGIONS


def _faces() -> np.ndarray:
    """Two 68-point faces whose tight boxes are 20 x 20 px (points on a grid inside it)."""
    rng = np.random.default_rng(0)
    pts = rng.uniform(0.0, 20.0, size=(2, 68, 2))
    pts[:, 0] = [0.0, 0.0]
    pts[:, 1] = [20.0, 20.0]
    return pts


def test_every_point_off_by_five_px() -> None:
    gt = _faces()
    pred = gt + np.array([3.0, 4.0])  # 5 px everywhere
    table = yaw_error_table(pred, gt, normaliser=np.array([10.0, 5.0]), yaw=np.array([10.0, -70.0]))
    assert table["|yaw| 0-15"]["nme"] == pytest.approx(0.5)
    assert table["|yaw| 60-90"]["nme"] == pytest.approx(1.0)  # the sign of yaw does not matter
    assert table["all"]["nme"] == pytest.approx(0.75)
    assert table["all"]["nme_box"] == pytest.approx(5.0 / 20.0)
    assert table["|yaw| 60-90"]["normaliser_over_box"] == pytest.approx(5.0 / 20.0)
    assert table["all"]["regions"] == pytest.approx({r: 0.75 for r in REGIONS})
    assert "|yaw| 15-30" not in table  # empty bins are left out
    assert [k for k in table] == ["all", "|yaw| 0-15", "|yaw| 60-90"]  # bins in yaw order
    # AFLW2000-3D's protocol divides by the same box: 0.25 in the two bins with faces, none at 30-60
    large = table["all"]["large_pose"]
    assert large["|yaw| 0-30"] == {"n": 1, "nme": pytest.approx(0.25)}
    assert large["|yaw| 60-90"] == {"n": 1, "nme": pytest.approx(0.25)}
    assert large["|yaw| 30-60"]["n"] == 0 and large["balanced"] is None
    assert "large_pose" not in table["|yaw| 0-15"]


def test_median_and_the_faces_with_a_small_normaliser() -> None:
    """Three faces in one bin, 20-px boxes, 5 px off each: normalisers 10, 10 and 1 (0.05 of the box,
    under SMALL_NORMALISER) read 0.5, 0.5 and 5.0; the small one holds 5 / 6 of the bin's sum."""
    gt = np.concatenate([_faces(), _faces()[:1]])
    pred = gt + np.array([3.0, 4.0])
    table = yaw_error_table(
        pred, gt, normaliser=np.array([10.0, 10.0, 1.0]), yaw=np.array([70.0, 75.0, 80.0])
    )
    row = table["|yaw| 60-90"]
    assert row["nme"] == pytest.approx(2.0) and row["nme_median"] == pytest.approx(0.5)
    assert row["small_normaliser"] == [1, pytest.approx(5.0 / 6.0)]


def test_region_errors_stay_in_their_region() -> None:
    gt = _faces()
    pred = gt.copy()
    pred[:, 0:17, 0] += 8.0  # only the jaw is off, by 8 px
    table = yaw_error_table(pred, gt, normaliser=np.array([4.0, 4.0]), yaw=np.array([0.0, 5.0]))
    row = table["all"]
    assert row["regions"]["jaw"] == pytest.approx(2.0)
    assert row["regions"]["eyes"] == 0.0 and row["regions"]["mouth"] == 0.0
    assert row["nme"] == pytest.approx(8.0 * 17 / 68 / 4.0)


def test_nme_at_frontal_box_error_keeps_only_the_normaliser() -> None:
    gt = _faces()
    pred = gt.copy()
    pred[0] += np.array([3.0, 4.0])  # the frontal face: 5 px, a quarter of its 20-px box
    pred[1] += np.array([6.0, 8.0])  # the turned face: 10 px
    table = yaw_error_table(pred, gt, normaliser=np.array([10.0, 5.0]), yaw=np.array([10.0, 80.0]))
    assert table["|yaw| 60-90"]["nme"] == pytest.approx(2.0)
    # off by the frontal face's 0.25 of the box, the turned face would read 0.25 * 20 / 5
    assert table["|yaw| 60-90"]["nme_at_frontal_box_error"] == pytest.approx(1.0)
    assert table["|yaw| 0-15"]["nme_at_frontal_box_error"] == pytest.approx(0.5)
    assert table["all"]["nme_at_frontal_box_error"] == pytest.approx(0.75)
    no_frontal = yaw_error_table(pred, gt, normaliser=np.array([10.0, 5.0]), yaw=np.array([50.0, 80.0]))
    assert no_frontal["all"]["nme_at_frontal_box_error"] is None


def test_jaw_radial_reads_a_shrunk_jaw_as_negative() -> None:
    gt = _faces()
    centre = gt.mean(axis=1, keepdims=True)
    pred = gt.copy()
    pred[:, 0:17] = centre + 0.9 * (gt[:, 0:17] - centre)  # the jaw pulled a tenth towards the centre
    table = yaw_error_table(pred, gt, normaliser=np.array([4.0, 4.0]), yaw=np.array([0.0, 40.0]))
    inward = np.linalg.norm(gt[:, 0:17] - centre, axis=2).mean(axis=1) * 0.1 / 4.0  # per face
    assert table["|yaw| 30-45"]["jaw_radial"] == pytest.approx(-inward[1])
    assert table["all"]["jaw_radial"] == pytest.approx(-inward.mean())
    assert "jaw_radial" not in yaw_error_table(pred, gt, np.array([4.0, 4.0]), np.zeros(2), regions={})["all"]


def test_service_points_keep_the_detected_face_that_matches_the_labels() -> None:
    """The service's path (``--client-box service:NAME``): the real SSD + BlazeFace detector and the
    embedded default model on a rendered face; the face that overlaps the labels is kept with the
    points ``Landmarker.predict`` gives it, a labelled face where nothing was found is not."""
    from runtime import Landmarker
    from tools.studies.detect_bench_core import SYNTHETIC_FACE_FRACTION, SYNTHETIC_SIZE
    from tools.studies.yaw_errors import _service_points
    from train.data.render import RenderOptions, render_face

    face = render_face(
        np.random.default_rng(5),
        SYNTHETIC_SIZE,
        10.0,
        0.0,
        0.0,
        RenderOptions(face_fraction=SYNTHETIC_FACE_FRACTION),
    )
    gt = np.stack([face.points68, face.points68 + [250.0, 0.0]]).astype(np.float64)  # the second: beside it
    with Landmarker.from_store(detector="ssd_blazeface") as landmarker:
        found, points = _service_points(landmarker, [face.image, face.image], gt)
        predicted = landmarker.predict(face.image)
    assert found.tolist() == [True, False]
    assert len(predicted) == 1
    np.testing.assert_allclose(points[0], predicted[0].landmarks)
    assert np.isnan(points[1]).all()
    iod = np.linalg.norm(gt[0, 36] - gt[0, 45])
    assert np.linalg.norm(points[0] - gt[0], axis=1).mean() / iod < 0.10


def test_dlib_reference_runs_only_from_its_own_hog_box(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.studies.yaw_errors import main

    with pytest.raises(SystemExit):
        main(["dlib"])  # from the tight box: not dlib's own pipeline
    assert "--client-box dlib_hog" in capsys.readouterr().err


def test_dlib_reference_names_a_missing_predictor(tmp_path: Path) -> None:
    from tools.studies.yaw_errors import _dlib_table

    missing = tmp_path / "shape_predictor_68_face_landmarks.dat"
    with pytest.raises(FileNotFoundError, match="wingmark data real"):
        _dlib_table({"kind": "synthetic", "num": 2, "seed": 2}, missing)


def test_dlib_reference_on_rendered_faces(tmp_path: Path) -> None:
    """dlib's own predictor from its own HOG box on a few frontal renders (exact labels): the faces HOG
    finds are counted per |yaw| bin and measured against the renders' labels."""
    from tools.studies.real_bench import default_cache
    from tools.studies.yaw_errors import _dlib_table

    predictor = default_cache() / "models" / "shape_predictor_68_face_landmarks.dat"
    if not predictor.exists():
        pytest.skip("dlib's predictor comes with the real-face cache (wingmark data real)")
    spec = {"kind": "synthetic", "num": 6, "seed": 5, "image_size": 256, "cache_dir": str(tmp_path)}
    spec["pose"] = {"yaw_std": 8.0, "yaw_tail": 0.0, "yaw_max": 20.0}  # near-frontal: HOG finds them
    table = _dlib_table(spec, predictor)
    found = sum(f for f, _ in table["found_by_detector"].values())
    assert sum(n for _, n in table["found_by_detector"].values()) == 6
    assert found >= 3
    assert table["stage1"]["all"]["n"] == found
    assert 0.01 < table["stage1"]["all"]["nme"] < 0.25


def test_evaluation_sets_follow_the_caches_there_are(tmp_path: Path) -> None:
    from tools.studies.yaw_errors import evaluation_sets

    real = tmp_path / "real"
    real.mkdir()
    assert list(evaluation_sets(real)) == ["synthetic_validation"]  # no real-face cache yet
    (real / "manifest.json").write_text("{}")
    (tmp_path / "repose-test").mkdir()
    sets = evaluation_sets(real)
    assert list(sets) == ["synthetic_validation", "real_held_out", "reposed_held_out"]
    assert sets["real_held_out"] == {"kind": "real", "root": str(real), "split": "test"}
    assert sets["reposed_held_out"]["cache_dir"] == str(tmp_path / "repose-test" / "renders")
    assert list(evaluation_sets(real, reposed=False)) == ["synthetic_validation", "real_held_out"]
