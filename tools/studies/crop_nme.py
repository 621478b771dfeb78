"""Does the uint8 crop (``model_store.crop``) move the published models' NME?

    python -m tools.studies.crop_nme [--real-root cache/real] [--out docs/crop_nme.json]

Each model is evaluated through ``runtime.Landmarker`` (client boxes: the tight ground-truth boxes;
ONNX Runtime, one thread) on the manifest's synthetic test set (rendered on demand) and, where the
real-face cache exists, on its held-out split, once per crop backend installed here; beside the NME
recorded in the manifest (measured with the float32 gather crop before the uint8 crop). The issue's
bound: the default models move by at most 0.02 NME points.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import model_store.crop as crop_module
from model_store.store import ModelStore, default_root
from runtime import Landmarker
from tools.studies import write_json

__all__ = ["main", "nme_by_backend"]

MODELS = ("cnn67-ibug68", "cnn67-aflw19", "cnn67-ibug68-int8", "cnn67-aflw19-int8")


def _backends() -> list[crop_module.CropBackend]:
    return [b for b in crop_module.CROP_BACKENDS if b == "numpy" or crop_module._cv2() is not None]


def nme_by_backend(model: str, samples: list[Any], recorded: float | None) -> dict[str, Any]:
    """NME (%) of ``model`` on ``samples`` with each crop backend, and the recorded figure (%)."""
    from train.export.evaluate import evaluate_landmarker

    out: dict[str, Any] = {"n": len(samples)}
    default = crop_module.crop_backend
    with Landmarker.from_store(model, detector=None, threads=1) as lm:
        try:
            for backend in _backends():
                crop_module.crop_backend = lambda b=backend: b  # type: ignore[misc]
                out[f"uint8_{backend}"] = round(100 * evaluate_landmarker(lm, samples)["final"]["nme"], 4)
        finally:
            crop_module.crop_backend = default
    if recorded is not None:
        out["recorded (float32 gather crop)"] = round(100 * recorded, 4)
        out["largest_change_points"] = round(
            max(
                abs(v - out["recorded (float32 gather crop)"])
                for k, v in out.items()
                if k.startswith("uint8")
            ),
            4,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.studies.crop_nme", description=__doc__)
    p.add_argument("--real-root", type=Path, default=Path("cache/real"))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", type=Path, default=Path("docs/crop_nme.json"))
    args = p.parse_args(argv)
    from train.dataset import load_samples
    from train.export.evaluate import load_synthetic

    store = ModelStore(default_root())
    report: dict[str, Any] = {
        "backend_default": crop_module.crop_backend(),
        "synthetic_test": {},
        "real_test": {},
    }
    for name in args.models:
        ev = store.resolve(name).manifest.evaluation
        scheme = store.resolve(name).manifest.scheme
        spec = {k: v for k, v in ev["test"]["dataset"].items() if k != "cache_dir"}
        report["synthetic_test"][name] = nme_by_backend(
            name, load_synthetic(spec, scheme), ev["test"]["final"]["nme"]
        ) | {"dataset": spec}
        print(name, "synthetic", report["synthetic_test"][name], flush=True)
        real = ev.get("sets", {}).get("real_test")
        if real and (args.real_root / "manifest.json").is_file():
            rspec = {**real["dataset"], "root": str(args.real_root)}
            samples = load_samples(rspec, scheme, progress=False)
            report["real_test"][name] = nme_by_backend(name, samples, real["final"]["nme"])
            print(name, "real", report["real_test"][name], flush=True)
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
