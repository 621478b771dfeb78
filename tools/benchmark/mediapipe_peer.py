"""MediaPipe Face Mesh end to end, for ``wingmark benchmark``'s peers; run in MediaPipe's own python
(``python -I mediapipe_peer.py IMAGE MIN_S REPEATS``), importing nothing from this project.

Each call decodes the JPEG (Pillow), finds the face and its 468 points (static-image mode: no tracking
from the previous call). Prints one JSON line: images/s per repeat, faces found, the model."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    import mediapipe as mp
    import numpy as np
    from PIL import Image

    data = Path(argv[0]).read_bytes()
    min_s, repeats = float(argv[1]), int(argv[2])
    faces = 0
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.5
    ) as mesh:

        def once() -> int:
            rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            result = mesh.process(rgb)
            return len(result.multi_face_landmarks or [])

        faces = once()
        rates = []
        for _ in range(repeats):
            n, t0 = 0, time.perf_counter()
            while n < 3 or time.perf_counter() - t0 < min_s:
                once()
                n += 1
            rates.append(n / (time.perf_counter() - t0))
    model = f"mediapipe {mp.__version__} face_mesh"
    print(json.dumps({"images_per_s": rates, "faces": faces, "model": model}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
