"""Flip-averaged stage graphs (train.export.flip): the mirror of an output on a hand-computed case, an
antisymmetric error cancelled, the graph against the same mean in numpy through ONNX Runtime (a stand-in
network and a published stage), and a flip-averaged version built from a published one, served by the
runtime and refused where it cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from model_store.schemes import get_scheme
from model_store.store import ModelStore, default_root
from tests.train.export.conftest import linear_net
from train.export.flip import (
    flip_average_outputs,
    flip_averaged_graph,
    flip_columns,
    flip_version,
    is_flip_averaged,
    underlying_version,
)
from train.export.parity import onnx_runtime_session, run_onnx
from train.export.quantize import quantize_version

STORE = ModelStore(default_root())


def test_flip_columns_mirror_an_output_on_a_hand_case() -> None:
    # three points, the first and last swap under a flip: (x0 y0 x1 y1 x2 y2) -> (1-x2 y2 1-x1 y1 1-x0 y0)
    index, scale, offset = flip_columns(np.array([2, 1, 0]))
    out = np.array([[0.1, 0.2, 0.5, 0.6, 0.7, 0.9]], dtype=np.float32)
    mirrored = out[:, index] * scale + offset
    assert mirrored == pytest.approx(np.array([[0.3, 0.9, 0.5, 0.6, 0.9, 0.2]]))
    assert (mirrored[:, index] * scale + offset) == pytest.approx(out)  # twice is the identity


def test_the_mean_with_the_mirror_cancels_a_sideways_bias() -> None:
    # a one-point "network": the x of the brightest column, read 0.05 too far right; y fixed
    def run(x: np.ndarray) -> np.ndarray:
        column = (x.sum(axis=(1, 2)).argmax(axis=1) + 0.5) / x.shape[-1]
        return np.stack([column + 0.05, np.full(len(x), 0.4)], axis=1).astype(np.float32)

    x = np.zeros((2, 3, 8, 8), dtype=np.float32)
    x[0, :, :, 1] = 1.0  # bright column 1 -> x = 1.5 / 8
    x[1, :, :, 6] = 1.0  # column 6 -> 6.5 / 8
    assert run(x)[:, 0] == pytest.approx([1.5 / 8 + 0.05, 6.5 / 8 + 0.05])
    averaged = flip_average_outputs(run, x, np.array([0]))
    assert averaged == pytest.approx(np.array([[1.5 / 8, 0.4], [6.5 / 8, 0.4]]))


def _session(model: onnx.ModelProto, path: Path) -> object:
    onnx.save(model, str(path))
    return onnx_runtime_session(path)


@pytest.mark.parametrize(("batch", "opset"), [(0, 17), (1, 17), (7, 17), (7, 18)])
def test_flip_averaged_graph_computes_the_numpy_mean(tmp_path: Path, batch: int, opset: int) -> None:
    rng = np.random.default_rng(3)
    size, perm = 5, np.array([3, 1, 2, 0, 4])
    net = linear_net(rng.normal(size=(3 * size * size, 2 * len(perm))) * 0.1, size)
    net.opset_import[0].version = opset  # Split takes num_outputs from opset 18 on
    source = _session(net, tmp_path / "net.onnx")
    flipped = flip_averaged_graph(net, perm, {"wingmark.stage": "2"})
    # ONNX 18's Split names its equal halves (ONNX Runtime also runs it without, other runtimes may not)
    (split,) = [node for node in flipped.graph.node if node.op_type == "Split"]
    assert any(a.name == "num_outputs" for a in split.attribute) == (opset >= 18)
    graph = _session(flipped, tmp_path / "flip.onnx")
    x = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
    got = run_onnx(graph, x)
    assert got.shape == (batch, 2 * len(perm))
    if batch:
        expected = flip_average_outputs(lambda b: run_onnx(source, b), x, perm)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
        assert np.abs(got - run_onnx(source, x)).max() > 1e-3  # it is not the plain network
    assert {p.key: p.value for p in onnx.load(str(tmp_path / "flip.onnx")).metadata_props} == {
        "wingmark.stage": "2"
    }


def test_a_published_gated_stage_averages_exactly(tmp_path: Path) -> None:
    version = STORE.resolve("faceapi-ibug68", "4.4.0")
    path = version.path / version.manifest.stages[1].file
    perm = get_scheme("ibug68").flip_permutation
    source = onnx_runtime_session(path)
    graph = _session(flip_averaged_graph(onnx.load(str(path)), perm), tmp_path / "s2.onnx")
    x = np.random.default_rng(4).uniform(-0.5, 0.5, size=(3, 3, 112, 112)).astype(np.float32)
    np.testing.assert_array_equal(
        run_onnx(graph, x), flip_average_outputs(lambda b: run_onnx(source, b), x, perm)
    )


@pytest.fixture(scope="module")
def flipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelStore, object]:
    """faceapi-aflw19 4.2.0 with its last stage flip-averaged, evaluated on 32 renders."""
    store = ModelStore(tmp_path_factory.mktemp("flip-store"))
    spec = {"kind": "synthetic", "num": 32, "seed": 43, "image_size": 160}
    version, _ = flip_version(
        STORE.resolve("faceapi-aflw19", "4.2.0"),
        "flip-test",
        "0.1.0",
        store,
        eval_specs={"val": spec},
        log=lambda _: None,
    )
    return store, version


def test_a_flip_averaged_version_is_published_checked_and_recorded(flipped) -> None:
    store, version = flipped
    store.verify(version)
    m = version.manifest
    source = STORE.resolve("faceapi-aflw19", "4.2.0")
    assert is_flip_averaged(m) and m.provenance.config["source"] == "faceapi-aflw19@4.2.0"
    assert m.provenance.config["stages"] == [2] and m.box_calibrations == source.manifest.box_calibrations
    # stage 1 is the source's file, stage 2 a new graph; parity recorded for the averaged stage only
    assert m.stages[0].sha256 == source.manifest.stages[0].sha256 != m.stages[1].sha256
    ev = m.evaluation
    assert [p["stage"] for p in ev["parity"]] == [2] and ev["parity"][0]["max_abs_error"] <= 1e-5
    assert ev["final"]["n"] == 32 and ev["final"]["nme"] != ev["source_alone"]["nme"]
    speeds = {str(k): v for k, v in ev["flip_cost"]["cascade_faces_per_s"].items()}
    assert set(speeds["1"]) == {"source", "flip_averaged"}
    # FLOPs counted from the graphs: stage 2 runs its network on the crop and on its mirror
    gflop = ev["cost"]["gflop_per_face"]
    assert gflop["stage2"] == pytest.approx(2 * gflop["stage1"], rel=0.02) and gflop["stage1"] > 0.05
    assert ev["cost"]["cascade_faces_per_s"]["1"] == speeds["1"]["flip_averaged"]


def test_the_runtime_serves_a_flip_averaged_version_and_quantize_refuses_it(flipped, served) -> None:
    store, version = flipped
    ev = version.manifest.evaluation
    report = served(version, batch_size=4)  # the flip inside the graph is per face: batches of 4 agree
    assert report["final"]["nme"] == pytest.approx(ev["final"]["nme"], abs=2e-4)
    with pytest.raises(ValueError, match="flip-averaged"):
        quantize_version(version, store, log=lambda _: None)
    with pytest.raises(ValueError, match="already flip-averaged"):
        flip_version(version, "again", "0.1.0", store, log=lambda _: None)


def test_the_published_flip_averaged_defaults_lead_to_their_sources() -> None:
    published = [
        ("faceapi-ibug68", "4.5.0", "4.4.0"),
        ("faceapi-ibug68", "4.7.0", "4.6.0"),
        ("faceapi-ibug68", "4.9.0", "4.8.0"),
        ("faceapi-aflw19", "4.3.0", "4.2.0"),
    ]
    for name, version, source in published:
        model = STORE.resolve(name, version)
        assert underlying_version(model, STORE).version == source
        ev = model.manifest.evaluation
        # recorded at publish time: better than the source on every set, the real held-out photos included
        for result in (ev, ev["test"], *ev["sets"].values()):
            assert result["final"]["nme"] < result["source_alone"]["nme"]
            assert all(p["passed"] for p in result["parity"])


def test_the_command_answers_with_a_message_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from train.export.cli import flip_main, quantize_main

    common = ["--name", "x", "--version", "0.1.0"]
    assert flip_main(["faceapi-aflw19@4.2.0", "--stages", "3", *common]) == 2
    assert "out of 1..2" in capsys.readouterr().err
    assert flip_main(["faceapi-aflw19@4.3.0", *common]) == 2
    assert "already flip-averaged" in capsys.readouterr().err
    assert quantize_main(["faceapi-aflw19@4.3.0", "--real-root", ""]) == 2
    assert "flip-averaged" in capsys.readouterr().err
