"""The stage-2 roll estimate: "eyes" (1.0.0 rule, default) vs "blend" (stable in profile)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from model_store.cascade import CascadeGeometry
from model_store.geometry import CropRule, crop_matrix_from_points, eye_angle, roll_angle
from model_store.manifest import CropRuleSpec, read_manifest
from model_store.schemes import AFLW19, IBUG68, Scheme
from train.data.render import render_face

MODELS = Path(__file__).resolve().parents[2] / "model_store" / "models"


def _shape(scheme: Scheme, yaw: float, roll: float = 0.0, seed: int = 0) -> np.ndarray:
    face = render_face(np.random.default_rng(seed), 256, yaw, 0.0, roll, geometry_only=True)
    return np.asarray(face.points68 if scheme.name == "ibug68" else face.points19, dtype=np.float64)


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    centre = pts.mean(axis=0)
    return np.asarray((pts - centre) @ np.array([[c, s], [-s, c]]) + centre)  # atan2 sense, y down


@pytest.mark.parametrize("scheme", [IBUG68, AFLW19])
def test_blend_equals_eye_line_on_frontal_faces(scheme: Scheme) -> None:
    pts = _rotate(_shape(scheme, 5.0), 0.3)
    assert roll_angle(pts, scheme, "blend") == pytest.approx(eye_angle(pts, scheme), abs=1e-9)
    assert roll_angle(pts, scheme, "eyes") == eye_angle(pts, scheme)


@pytest.mark.parametrize("scheme", [IBUG68, AFLW19])
def test_blend_is_rotation_equivariant_in_profile(scheme: Scheme) -> None:
    pts = _shape(scheme, 85.0)
    for angle in (-0.6, 0.25, 1.0):
        got = roll_angle(_rotate(pts, angle), scheme, "blend")
        assert got == pytest.approx(roll_angle(pts, scheme, "blend") + angle, abs=1e-9)


@pytest.mark.parametrize("scheme", [IBUG68, AFLW19])
def test_blend_roll_is_stable_on_a_noisy_profile(scheme: Scheme) -> None:
    """A profile (yaw 85 deg) with stage-1-sized point noise (2 % of the face size): the eye-line
    roll scatters by tens of degrees, the blended estimate stays within a few."""
    pts = _shape(scheme, 85.0)
    size = float(np.ptp(pts, axis=0).max())
    rng = np.random.default_rng(1)
    eyes, blend = [], []
    for _ in range(200):
        noisy = pts + rng.normal(0.0, 0.02 * size, pts.shape)
        eyes.append(roll_angle(noisy, scheme, "eyes"))
        blend.append(roll_angle(noisy, scheme, "blend"))
    spread = {k: math.degrees(float(np.std(np.unwrap(v)))) for k, v in (("eyes", eyes), ("blend", blend))}
    assert spread["blend"] < 5.0, spread
    assert spread["eyes"] > 3 * spread["blend"], spread


def test_crop_rule_roll_option_and_manifest_default() -> None:
    with pytest.raises(ValueError, match="roll"):
        CropRule(roll="nose")
    assert CropRule.from_dict({"scale": 1.25}) == CropRule()
    assert CropRule.from_dict(CropRule(roll="blend").to_dict()).roll == "blend"
    assert CropRuleSpec().to_rule().roll == "eyes"
    assert CropRuleSpec(roll="blend").to_rule().roll == "blend"
    pts = _shape(IBUG68, 80.0)
    eyes = crop_matrix_from_points(pts, IBUG68, 128, CropRule())
    blend = crop_matrix_from_points(pts, IBUG68, 128, CropRule(roll="blend"))
    assert not np.allclose(eyes, blend)


def test_published_manifests_keep_the_eye_line_rule() -> None:
    """1.0.0 manifests have no ``roll``: they read as "eyes", so old models behave exactly as before."""
    paths = sorted(MODELS.glob("*/1.0.0/manifest.json"))
    assert paths
    for path in paths:
        raw = json.loads(path.read_text())
        assert all("roll" not in stage.get("crop_rule", {}) for stage in raw["stages"])
        assert all(
            g.crop_rule.roll == "eyes" for g in CascadeGeometry.from_manifest(read_manifest(path)).stages
        )
