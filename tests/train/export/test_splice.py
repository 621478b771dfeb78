"""A cascade spliced from two published versions of different networks and crop geometries
(train.export.splice): published with each stage's own spec and file, evaluated as the runtime serves it,
and refused where the sources cannot chain."""

from __future__ import annotations

import numpy as np
import pytest

from model_store.store import ModelStore, default_root
from train.dataset import load_samples
from train.export.evaluate import evaluate_cascade
from train.export.parity import stage_runner
from train.export.splice import SPLICE_KIND, splice_version

STORE = ModelStore(default_root())
SPEC = {"kind": "synthetic", "num": 32, "seed": 43, "image_size": 160}


@pytest.fixture(scope="module")
def spliced(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelStore, object]:
    """CNN-6's stage 1 of cnn67-ibug68 3.0.0 (64 px) before faceapi-ibug68 4.3.0's stage 2 (112 px)."""
    store = ModelStore(tmp_path_factory.mktemp("splice-store"))
    version, _ = splice_version(
        [STORE.resolve("cnn67-ibug68", "3.0.0"), STORE.resolve("faceapi-ibug68", "4.3.0")],
        "splice-test",
        "0.1.0",
        store,
        eval_specs={"val": SPEC},
        log=lambda _: None,
    )
    return store, version


def test_each_stage_keeps_its_own_spec_and_file(spliced) -> None:
    store, version = spliced
    store.verify(version)
    m = version.manifest
    first = STORE.resolve("cnn67-ibug68", "3.0.0").manifest.stages[0]
    second = STORE.resolve("faceapi-ibug68", "4.3.0").manifest.stages[1]
    assert (m.stages[0].input_size, m.stages[1].input_size) == (64, 112)
    for got, want in ((m.stages[0], first), (m.stages[1], second)):
        assert (got.sha256, got.crop_rule, got.normalisation, got.architecture) == (
            want.sha256,
            want.crop_rule,
            want.normalisation,
            want.architecture,
        )
    assert m.provenance.config["kind"] == SPLICE_KIND
    assert [s["source"] for s in m.provenance.config["stages"]] == [
        "cnn67-ibug68@3.0.0",
        "faceapi-ibug68@4.3.0",
    ]
    assert m.box_calibrations == STORE.resolve("faceapi-ibug68", "4.3.0").manifest.box_calibrations


def test_the_recorded_nme_is_stage_1_of_one_then_stage_2_of_the_other(spliced) -> None:
    """Recomputed here from the two sources' own files: their stage 1 alone, then each stage 2 on it."""
    _, version = spliced
    ev = version.manifest.evaluation
    a = STORE.resolve("cnn67-ibug68", "3.0.0")
    b = STORE.resolve("faceapi-ibug68", "4.3.0")
    samples = list(load_samples(SPEC, "ibug68", progress=False))
    from model_store.cascade import CascadeGeometry

    geo_a = CascadeGeometry.from_manifest(a.manifest).stages
    geo_b = CascadeGeometry.from_manifest(b.manifest).stages
    run = stage_runner([a.path / a.manifest.stages[0].file, b.path / b.manifest.stages[1].file])
    own = evaluate_cascade(run, [geo_a[0], geo_b[1]], samples, "ibug68")
    a_alone = evaluate_cascade(
        stage_runner([a.path / s.file for s in a.manifest.stages]), geo_a, samples, "ibug68"
    )
    assert ev["final"]["n"] == 32
    assert ev["final"]["nme"] == pytest.approx(own["final"]["nme"], abs=1e-9)
    assert ev["stage1"]["nme"] == pytest.approx(a_alone["stage1"]["nme"], abs=1e-9)
    # stage 2 is not a's: a's own cascade ends elsewhere, and b's stage 2 improves on a's stage 1
    assert not np.isclose(ev["final"]["nme"], a_alone["final"]["nme"])
    assert ev["final"]["nme"] < ev["stage1"]["nme"]
    assert ev["last_source_alone"]["nme"] > 0
    speeds = {str(k): v for k, v in ev["splice_cost"]["cascade_faces_per_s"].items()}
    assert set(speeds["1"]) == {"last_source", "spliced"} and speeds["1"]["spliced"] > 0


def test_the_runtime_serves_a_spliced_version(spliced, served) -> None:
    _, version = spliced
    report = served(version, batch_size=4)
    assert report["final"]["nme"] == pytest.approx(version.manifest.evaluation["final"]["nme"], abs=2e-4)


def test_sources_that_cannot_chain_are_refused(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.export.cli import splice_main

    store = ModelStore(tmp_path)
    one = STORE.resolve("faceapi-ibug68", "4.3.0")
    with pytest.raises(ValueError, match="at least two"):
        splice_version([one], "x", "0.1.0", store)
    common = ["--name", "x", "--version", "0.1.0", "--store", str(tmp_path)]
    assert splice_main(["faceapi-aflw19@4.3.0", "faceapi-ibug68@4.3.0", *common]) == 2
    assert "aflw19" in capsys.readouterr().err
