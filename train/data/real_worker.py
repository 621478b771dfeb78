"""Helper run by the *separate* MediaPipe virtual environment (``<cache>/mp-venv``), never imported by
wingmark itself: MediaPipe 0.10.21 needs numpy<2 and protobuf 4, so it lives in its own process.

It imports nothing from this project. Three jobs, each reading a JSON request file and writing a JSON
answer file:

``frames REQUEST ANSWER``: decode videos with PyAV and save sparse frames as JPEG.
    request: {"videos": [{"path", "out_dir", "stem", "max_frames", "min_stride"}]}
    answer: {"videos": [{"path", "total_frames", "frames": [{"index", "file"}]}]}

``mesh REQUEST ANSWER``: MediaPipe Face Mesh (468 points, static-image mode) on face crops.
    request: {"crops": [{"id", "file"}]} (PNG crops made by the caller around one face each)
    answer: {"model": ..., "faces": {id: [[x, y] * 468] | null}} in the crop's pixel coordinates
    (origin at the top-left corner of the top-left pixel).

``mesh3d REQUEST ANSWER``: as ``mesh``, with each point's depth: ``[[x, y, z] * 468] | null`` where
    x, y are as above and z is MediaPipe's relative depth scaled like x (times the crop's width, as
    MediaPipe documents), smaller nearer the camera, 0 near the head's centre plane.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _frames(request: dict[str, Any]) -> dict[str, Any]:
    import av
    from PIL import Image

    answers = []
    for video in request["videos"]:
        path = Path(video["path"])
        out_dir = Path(video["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            total = int(stream.frames or 0)
            if total <= 0:  # count by decoding when the container does not say
                total = sum(1 for _ in container.decode(video=0))
                container.seek(0)
        stride = max(int(video["min_stride"]), -(-total // max(int(video["max_frames"]), 1)))
        wanted = set(range(stride // 2, total, stride))
        frames = []
        with av.open(str(path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index not in wanted:
                    continue
                name = f"{video['stem']}_f{index:05d}.jpg"
                dest = out_dir / name
                if not dest.is_file():
                    img: Image.Image = frame.to_image()
                    img.convert("RGB").save(dest, quality=95)
                frames.append({"index": index, "file": str(dest)})
        answers.append({"path": str(path), "total_frames": total, "frames": frames})
        print(f"frames: {path.name}: {len(frames)} of {total}", file=sys.stderr, flush=True)
    return {"videos": answers}


def _mesh(request: dict[str, Any], with_depth: bool = False) -> dict[str, Any]:
    import mediapipe as mp
    import numpy as np
    from PIL import Image

    faces: dict[str, Any] = {}
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5
    ) as mesh:
        crops = request["crops"]
        for n, crop in enumerate(crops):
            with Image.open(crop["file"]) as im:
                rgb = np.asarray(im.convert("RGB"))
            result = mesh.process(rgb)
            if not result.multi_face_landmarks:
                faces[crop["id"]] = None
            else:
                h, w = rgb.shape[:2]
                lms = result.multi_face_landmarks[0].landmark
                if with_depth:
                    faces[crop["id"]] = [[float(p.x) * w, float(p.y) * h, float(p.z) * w] for p in lms]
                else:
                    faces[crop["id"]] = [[float(p.x) * w, float(p.y) * h] for p in lms]
            if (n + 1) % 50 == 0 or n + 1 == len(crops):
                print(f"mesh: {n + 1}/{len(crops)} crops", file=sys.stderr, flush=True)
    return {"model": f"mediapipe {mp.__version__} face_mesh (face_landmark.tflite)", "faces": faces}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in {"frames", "mesh", "mesh3d"}:
        print("usage: real_worker.py frames|mesh|mesh3d REQUEST.json ANSWER.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[1]).read_text())
    answer = _frames(request) if argv[0] == "frames" else _mesh(request, with_depth=argv[0] == "mesh3d")
    Path(argv[2]).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
