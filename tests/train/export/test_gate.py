"""The pose-gated stage graphs (train.export.gate): the yaw head's features and fit on hand-computed
cases, the gated graph against the same gate in numpy through ONNX Runtime, and a gated version built from
two published models, served by the runtime and refused by ``wingmark quantize``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from model_store.store import ModelStore, default_root
from tests.train.export.conftest import linear_net
from train.export.gate import (
    YawHead,
    fit_yaw_head,
    gate_stage_outputs,
    gate_version,
    gated_graph,
    is_gated,
    run_lineage,
    shape_features,
)
from train.export.parity import onnx_runtime_session, run_onnx
from train.export.quantize import quantize_version

STORE = ModelStore(default_root())


def test_shape_features_centre_and_scale_the_points() -> None:
    # two points (0, 0) and (2, 0): centred (-1, 0), (1, 0); RMS distance from the centre 1
    assert shape_features(np.array([[0.0, 0.0, 2.0, 0.0]])) == pytest.approx(np.array([[-1, 0, 1, 0]]))
    # the crop's translation and scale drop out
    p = np.random.default_rng(0).normal(size=(3, 10))
    assert shape_features(5.0 * p + 0.25) == pytest.approx(shape_features(p))
    # all points on one spot: no shape, NaN features (no threshold passes them)
    assert np.isnan(shape_features(np.ones((1, 6)))).all()


def test_fit_recovers_a_linear_yaw_and_needs_enough_faces() -> None:
    rng = np.random.default_rng(1)
    outputs = rng.normal(size=(400, 8))
    w = rng.normal(size=8)
    yaw = shape_features(outputs) @ w + 7.0
    head = fit_yaw_head(outputs, yaw, ridge=1e-9)
    assert head.bias == pytest.approx(7.0, abs=1e-5)
    assert head.predict(outputs) == pytest.approx(yaw, abs=1e-5)
    assert YawHead.from_dict(head.to_dict()).predict(outputs[:3]) == pytest.approx(yaw[:3], abs=1e-5)
    with pytest.raises(ValueError, match="more finite faces"):
        fit_yaw_head(outputs[:8], yaw[:8])


def test_gate_takes_the_turned_rows_at_and_above_the_threshold() -> None:
    # features of [0, 0, 2, 0] are [-1, 0, 1, 0]; a head reading the last x: yaw = 40 * x1 + 5 = 45
    head = YawHead(np.array([0.0, 0.0, 40.0, 0.0]), 5.0)
    frontal = np.array([[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 2.0], [2.0, 0.0, 0.0, 0.0]])  # yaw 45, 5, -35
    turned = frontal + 100.0
    out, mask = gate_stage_outputs(frontal, turned, head, 45.0)
    assert mask.tolist() == [True, False, False]  # |yaw| >= 45 is inclusive
    assert out.tolist() == [turned[0].tolist(), frontal[1].tolist(), frontal[2].tolist()]
    assert gate_stage_outputs(frontal, turned, head, 35.0)[1].tolist() == [True, False, True]  # |-35|


@pytest.mark.parametrize("share", ["some", "none", "all"])
@pytest.mark.parametrize("batch", [1, 9])
def test_gated_graph_computes_the_numpy_gate(tmp_path: Path, share: str, batch: int) -> None:
    rng = np.random.default_rng(2)
    size, k2 = 4, 10
    frontal, turned = (linear_net(rng.normal(size=(3 * size * size, k2)), size) for _ in range(2))
    x = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
    head = YawHead(rng.normal(scale=30.0, size=k2), 3.0)
    out_f = run_onnx(onnx_runtime_session(_save(frontal, tmp_path / "f.onnx")), x)
    out_t = run_onnx(onnx_runtime_session(_save(turned, tmp_path / "t.onnx")), x)
    yaw = np.abs(head.predict(out_f))
    ranked = np.sort(
        np.concatenate([[0.0], yaw])
    )  # "some": halfway between two faces' |yaw| (the upper half)
    middle = len(ranked) // 2
    some = float(ranked[middle - 1] + ranked[middle]) / 2 if batch > 1 else float(yaw[0]) / 2
    threshold = {"some": some, "none": float(yaw.max()) + 1.0, "all": 0.0}[share]
    graph = gated_graph(frontal, turned, head, threshold, {"wingmark.stage": "1"})
    got = run_onnx(onnx_runtime_session(_save(graph, tmp_path / "g.onnx")), x)
    expected, mask = gate_stage_outputs(out_f, out_t, head, threshold)
    assert {"some": 0 < mask.sum() <= batch, "none": not mask.any(), "all": mask.all()}[share]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert {p.key: p.value for p in graph.metadata_props}["wingmark.stage"] == "1"


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_run_lineage_follows_run_configs_to_a_published_model(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "data: {train: {kind: mix, parts: [{kind: real}, {kind: synthetic}]}}\n"
        "stage1: {pretrained: model_store/models/m/1.0.0/stage1.onnx}\n"
    )
    (tmp_path / "a.yaml").write_text(
        "data: {train: {kind: synthetic}}\nstage1: {pretrained: runs/b/stage1/best.pt}\n"
    )
    lineage = run_lineage({"stage1": {"pretrained": "runs/a/stage1/best.pt"}}, configs=tmp_path)
    assert [step.get("trained_on") for step in lineage] == [["synthetic"], ["real", "synthetic"], None]
    assert lineage[-1] == {"from": "model_store/models/m/1.0.0/stage1.onnx"}


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelStore, object]:
    """faceapi-ibug68 4.3.0 gated with 4.2.0 at 30 degrees by the published 4.4.0's yaw heads, on 24 renders
    of yaw uniform in +-90 degrees."""
    store = ModelStore(tmp_path_factory.mktemp("gated-store"))
    heads = [
        YawHead.from_dict(h)
        for h in STORE.resolve("faceapi-ibug68", "4.4.0").manifest.provenance.config["heads"]
    ]
    spec = {"kind": "synthetic", "num": 24, "seed": 41, "image_size": 160, "pose": {"yaw_tail": 1.0}}
    version, _ = gate_version(
        STORE.resolve("faceapi-ibug68", "4.3.0"),
        STORE.resolve("faceapi-ibug68", "4.2.0"),
        "gated-test",
        "0.1.0",
        store,
        threshold=30.0,
        heads=heads,
        heads_report={"faces": 0, "note": "the published 4.4.0's heads"},
        eval_specs={"val": spec},
        log=lambda _: None,
    )
    return store, version


def test_a_gated_version_is_published_checked_and_recorded(gated) -> None:
    store, version = gated
    store.verify(version)
    m = version.manifest
    assert is_gated(m) and m.provenance.config["frontal"] == "faceapi-ibug68@4.3.0"
    assert m.box_calibrations == STORE.resolve("faceapi-ibug68", "4.3.0").manifest.box_calibrations
    ev = m.evaluation
    assert all(p["passed"] and p["max_abs_error"] <= 1e-5 for p in ev["parity"])
    assert 0 < ev["gated_faces"]["stage1"] < 24 and 0 < ev["gated_faces"]["stage2"] < 24
    # the two models alone on the same faces, and the gated cascade between or beside them
    assert {"frontal_alone", "turned_alone"} <= set(ev) and ev["final"]["n"] == 24
    assert ev["final"]["nme"] != ev["frontal_alone"]["nme"]


def test_the_runtime_serves_a_gated_version_and_quantize_refuses_it(gated, served) -> None:
    store, version = gated
    ev = version.manifest.evaluation
    report = served(version, batch_size=8)
    # batches of 8 through the runtime's backend give the recorded figure (gating is per face)
    assert report["final"]["nme"] == pytest.approx(ev["final"]["nme"], abs=2e-4)
    with pytest.raises(ValueError, match="pose-gated"):
        quantize_version(version, store, log=lambda _: None)


@pytest.mark.parametrize(
    ("frontal", "turned", "error"),
    [
        # stage 2: CNN-7's 128 px crop would be resampled up from face-api's 112 px one
        ("faceapi-ibug68@4.3.0", "cnn67-ibug68@3.0.0", "upsampled"),
        ("faceapi-ibug68@4.4.0", "faceapi-ibug68@4.3.0", "not a gated version"),  # already gated
    ],
)
def test_only_two_plain_models_whose_crops_can_be_cut_are_gated(
    tmp_path: Path, frontal: str, turned: str, error: str
) -> None:
    head = YawHead(np.zeros(136), 0.0)
    with pytest.raises(ValueError, match=error):
        gate_version(
            STORE.resolve(*frontal.split("@")),
            STORE.resolve(*turned.split("@")),
            "x",
            "0.1.0",
            ModelStore(tmp_path),
            threshold=45.0,
            heads=[head, head],
            heads_report={},
        )


def test_the_commands_answer_with_a_message_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from train.export.cli import gate_main, quantize_main

    assert quantize_main(["faceapi-ibug68@4.4.0", "--real-root", ""]) == 2
    assert "pose-gated" in capsys.readouterr().err
    common = ["--name", "x", "--version", "0.1.0"]
    assert gate_main(["--frontal", "faceapi-ibug68@4.3.0", "--turned", "cnn67-ibug68@3.0.0",
                      "--heads-from", "faceapi-ibug68@4.4.0", *common]) == 2  # fmt: skip
    assert "upsampled" in capsys.readouterr().err
    assert gate_main(["--frontal", "faceapi-ibug68@4.3.0", "--turned", "faceapi-ibug68@4.2.0",
                      "--heads-from", "faceapi-ibug68@4.3.0", *common]) == 2  # fmt: skip
    assert "not a gated version" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "heads", "expected"),
    [(None, None, 45.0), (None, 45.0, 45.0), (30.0, 45.0, 30.0), (30.0, None, 30.0)],
)
def test_a_threshold_given_wins_over_the_reused_heads_one(
    given: float | None, heads: float | None, expected: float
) -> None:
    from train.export.cli import gate_threshold

    assert gate_threshold(given, heads) == expected
