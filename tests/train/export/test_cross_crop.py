"""A turned network's crop cut from the frontal one (train.export.cross_crop): the window's map against both
crop matrices, the numpy resample against a direct crop of the image, the graph against numpy, refusals."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

from model_store.crop import crop_reference
from model_store.geometry import CropRule, apply_affine, crop_matrix_from_box, crop_matrix_from_points
from model_store.preprocess import Normalisation, to_input
from model_store.schemes import get_scheme
from tests.train.export.conftest import linear_net
from train.export.cross_crop import CropMap, crop_map, map_output, resample
from train.export.gate import YawHead, gate_stage_outputs, gated_graph
from train.export.parity import onnx_runtime_session, run_onnx

MESH = SimpleNamespace(
    input_size=192,
    crop_rule=CropRule(scale=1.7, shift_y=-0.1, roll="blend"),
    normalisation=Normalisation(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)),
)
FACEAPI = SimpleNamespace(
    input_size=112,
    crop_rule=CropRule(scale=1.25, roll="blend"),
    normalisation=Normalisation(mean=(122.782, 117.001, 104.298), std=(255.0, 255.0, 255.0)),
)


def _norm(spec: SimpleNamespace) -> Normalisation:
    norm: Normalisation = spec.normalisation
    return norm


def test_the_window_of_the_face_mesh_crop_by_hand() -> None:
    m = crop_map(MESH, FACEAPI, stage=1)
    assert m is not None
    # a = (192 / 1.7) / (112 / 1.25) = 112.94 / 89.6; b = 96 - 56 a, and 112.94 * 0.1 more in y (the mesh
    # crop sits higher)
    a = (192 / 1.7) / (112 / 1.25)
    assert m.scale == pytest.approx(a)
    assert m.offset == pytest.approx((96 - 56 * a, 96 - 56 * a + 192 / 1.7 * 0.1))
    gain, bias = m.channel_affine()  # x_t = x_f - mean / 255
    assert gain == pytest.approx([1, 1, 1])
    assert bias == pytest.approx(-np.array([122.782, 117.001, 104.298]) / 255)
    assert crop_map(FACEAPI, FACEAPI, stage=2) is None


@pytest.mark.parametrize("stage", [1, 2])
def test_the_map_agrees_with_both_crop_matrices(stage: int) -> None:
    rng = np.random.default_rng(3)
    m = crop_map(MESH, FACEAPI, stage=stage)
    assert m is not None
    scheme = get_scheme("ibug68")
    for _ in range(5):
        if stage == 1:  # an upright box crop: the runtime's client-box path
            box = np.array([40.0, 60.0, 40 + rng.uniform(50, 200), 60 + rng.uniform(50, 200)])
            mf, mt = (crop_matrix_from_box(box, s.input_size, s.crop_rule) for s in (MESH, FACEAPI))
        else:  # re-aligned on rolled points
            pts = rng.normal(scale=30.0, size=(68, 2)) + 200.0
            mf, mt = (
                crop_matrix_from_points(pts, scheme, s.input_size, s.crop_rule) for s in (MESH, FACEAPI)
            )
        p = rng.uniform(0, 400, size=(10, 2))
        u_f, u_t = apply_affine(mf, p), apply_affine(mt, p)
        np.testing.assert_allclose(u_f, m.scale * u_t + np.array(m.offset), atol=1e-9)
        # the turned network's crop-unit output mapped back reads the same image point
        o_f = map_output((u_t / FACEAPI.input_size).reshape(1, -1), m).reshape(-1, 2)
        np.testing.assert_allclose(o_f * MESH.input_size, u_f, atol=1e-3)


def test_the_resample_of_a_crop_is_the_direct_crop_on_a_linear_image() -> None:
    # bilinear sampling is exact on a linear image, so resampling the frontal crop must give the turned
    # network's own crop of the image (normalised its way)
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float64)
    image = np.stack([0.3 * xx + 0.1 * yy, 0.2 * yy + 10, 0.25 * (xx + yy) + 5], axis=-1)
    box = np.array([130.0, 150.0, 250.0, 270.0])
    crops = {
        name: crop_reference(image, crop_matrix_from_box(box, s.input_size, s.crop_rule), s.input_size)
        for name, s in (("f", MESH), ("t", FACEAPI))
    }
    m = crop_map(MESH, FACEAPI, stage=1)
    assert m is not None
    got = resample(to_input(crops["f"][None], _norm(MESH)), m)
    np.testing.assert_allclose(got, to_input(crops["t"][None], _norm(FACEAPI)), atol=1e-4)


@pytest.mark.parametrize("batch", [1, 7])
def test_the_gated_graph_with_a_window_computes_the_numpy_gate(tmp_path: Path, batch: int) -> None:
    rng = np.random.default_rng(4)
    sf, st, k2 = 12, 8, 10
    front = SimpleNamespace(input_size=sf, crop_rule=CropRule(scale=1.5), normalisation=Normalisation())
    turn = SimpleNamespace(
        input_size=st,
        crop_rule=CropRule(scale=1.2, shift_y=0.1),
        normalisation=Normalisation((0, 0, 0), (255, 255, 255)),
    )
    m = crop_map(front, turn, stage=1)
    assert m is not None and m.scale > 1
    frontal = linear_net(rng.normal(size=(3 * sf * sf, k2)), sf)
    turned = linear_net(rng.normal(size=(3 * st * st, k2)), st)
    x = rng.normal(size=(batch, 3, sf, sf)).astype(np.float32)
    head = YawHead(rng.normal(scale=30.0, size=k2), 3.0)
    run = {
        n: onnx_runtime_session(_save(g, tmp_path / f"{n}.onnx")) for n, g in (("f", frontal), ("t", turned))
    }
    out_f = run_onnx(run["f"], x)
    out_t = map_output(run_onnx(run["t"], resample(x, m)), m)
    ranked = np.sort(np.concatenate([[0.0], np.abs(head.predict(out_f))]))
    threshold = float(ranked[-2] + ranked[-1]) / 2  # between two faces: float32 and float64 agree
    expected, mask = gate_stage_outputs(out_f, out_t, head, threshold)
    assert mask.any()
    graph = gated_graph(frontal, turned, head, threshold, crop=m)
    got = run_onnx(onnx_runtime_session(_save(graph, tmp_path / "g.onnx")), x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_windows_that_cannot_be_cut_are_refused() -> None:
    with pytest.raises(ValueError, match="upsampled"):  # the mesh: 112.9 px per box side; face-api: 89.6
        crop_map(FACEAPI, MESH, stage=1)
    wide = SimpleNamespace(input_size=64, crop_rule=CropRule(scale=2.5), normalisation=_norm(FACEAPI))
    with pytest.raises(ValueError, match="reaches outside"):  # 2.5x the box from a 1.25x crop
        crop_map(FACEAPI, wide, stage=1)
    eyes = SimpleNamespace(
        input_size=96, crop_rule=CropRule(scale=1.25, roll="eyes"), normalisation=_norm(FACEAPI)
    )
    with pytest.raises(ValueError, match="different rolls"):
        crop_map(FACEAPI, eyes, stage=2)
    assert isinstance(crop_map(FACEAPI, eyes, stage=1), CropMap)  # stage 1 crops remove no roll
