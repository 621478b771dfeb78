"""The naive peer of ``wingmark benchmark``: a plain FastAPI endpoint that runs the same ONNX models
per request, without batching, thread pools or a device worker (what a first version would be).

    uvicorn --factory tools.naive:create_app --port 8712

``POST /landmarks?box=x1,y1,x2,y2`` with the raw image as body -> ``{"landmarks": [[[x, y], ...]]}``.
Only the benchmark uses it; the service never imports it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from model_store.store import DEFAULT_MODELS, ModelStore, default_root
from runtime.cascade import Cascade

__all__ = ["create_app"]


def create_app() -> FastAPI:
    import onnxruntime as ort
    from PIL import Image

    root = os.environ.get("WINGMARK_MODEL_ROOT")
    store = ModelStore(Path(root) if root else default_root())
    model = store.resolve(os.environ.get("WINGMARK_NAIVE_MODEL", DEFAULT_MODELS["ibug68"]))
    sessions = [
        ort.InferenceSession(str(model.path / s.file), providers=["CPUExecutionProvider"])
        for s in model.manifest.stages
    ]
    names = [s.get_inputs()[0].name for s in sessions]

    def run_stage(i: int, x: np.ndarray) -> np.ndarray:
        return np.asarray(sessions[i].run(None, {names[i]: x})[0])

    cascade = Cascade.from_manifest(model.manifest, run_stage)

    app = FastAPI(title="naive wingmark peer")

    @app.post("/landmarks")
    async def landmarks(request: Request, box: str = Query(...)) -> Any:
        data = await request.body()
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        boxes = np.array([[float(v) for v in box.split(",")]])
        pts = cascade.run([image], boxes)[-1]
        return JSONResponse({"landmarks": np.round(pts, 2).tolist()})

    return app
