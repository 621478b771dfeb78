"""Run in MediaPipe's own virtual environment (numpy<2): BlazeFace through ``mp.solutions.face_detection``.

usage: python -I mediapipe_reference.py <request.json> <answer.json>
request: {"images": [path, ...], "model_selection": 0}; answer: {"version", "faces": {path: [{"score",
"box": [xmin, ymin, width, height] (relative), "keypoints": [[x, y] * 6] (relative)}]}}
"""

from __future__ import annotations

import json
import sys

import mediapipe as mp
import numpy as np
from PIL import Image


def main() -> None:
    with open(sys.argv[1]) as f:
        request = json.load(f)
    out = {}
    with mp.solutions.face_detection.FaceDetection(
        model_selection=int(request.get("model_selection", 0)), min_detection_confidence=0.5
    ) as fd:
        for path in request["images"]:
            rgb = np.asarray(Image.open(path).convert("RGB"))
            res = fd.process(rgb)
            faces = []
            for d in res.detections or []:
                loc = d.location_data
                b = loc.relative_bounding_box
                faces.append(
                    {
                        "score": float(d.score[0]),
                        "box": [b.xmin, b.ymin, b.width, b.height],
                        "keypoints": [[k.x, k.y] for k in loc.relative_keypoints],
                    }
                )
            out[path] = faces
    with open(sys.argv[2], "w") as f:
        json.dump({"version": mp.__version__, "faces": out}, f)


if __name__ == "__main__":
    main()
