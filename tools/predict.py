"""``wingmark predict``: landmarks for one image, from a running service (--url) or in-process.

wingmark predict face.jpg                       # in-process (runtime.Landmarker), WINGMARK_* settings
wingmark predict face.jpg --url http://127.0.0.1:8000 --box 40,30,200,220 --scheme aflw19
wingmark predict face.jpg --draw out.png --json
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["draw_result", "main"]


def _box(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"box must be x1,y1,x2,y2, got {text!r}") from None
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"box must be x1,y1,x2,y2, got {text!r}")
    return values


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wingmark predict", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    p.add_argument("image", type=Path, help="image file (JPEG, PNG, WebP, BMP, ...)")
    p.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000 (default: run in-process)")
    p.add_argument(
        "--box", type=_box, action="append", help="face box x1,y1,x2,y2 (repeatable; skips detection)"
    )
    p.add_argument("--scheme", choices=["ibug68", "aflw19"], help="landmark scheme (default ibug68)")
    p.add_argument("--model", help="model name (default: the scheme's default model)")
    p.add_argument("--max-faces", type=int, help="keep at most this many detected faces")
    p.add_argument(
        "--views", type=int, choices=[1, 5, 9],
        help="crops per face at the last stage, averaged (default: WINGMARK_VIEWS, or the service's)",
    )  # fmt: skip
    p.add_argument(
        "--refine", choices=["never", "detector", "always"],
        help="which faces run the cascade again from their own points' box (default: WINGMARK_REFINE, or "
        "the service's)",
    )  # fmt: skip
    p.add_argument("--draw", type=Path, help="write the image with boxes and landmarks drawn to this file")
    p.add_argument("--json", action="store_true", help="print the full response as JSON")
    return p


def _remote(args: argparse.Namespace, data: bytes) -> dict[str, Any]:
    from tools.client import LandmarkClient

    with LandmarkClient(args.url) as client:
        return client.landmarks(
            data, boxes=args.box, scheme=args.scheme, model=args.model, max_faces=args.max_faces,
            views=args.views, refine=args.refine,
        )  # fmt: skip


def _in_process(args: argparse.Namespace, data: bytes) -> dict[str, Any]:
    """The runtime's facade (``runtime.Landmarker``) with the service's settings (WINGMARK_*)."""
    import numpy as np

    from runtime import Landmarker, decode_image
    from service.settings import Settings

    s = Settings()
    started = time.monotonic()
    with Landmarker.from_store(
        args.model, scheme=args.scheme or "ibug68", store=s.model_root, backend=s.backend, device=s.device,
        max_batch_size=s.max_batch_size, verify=s.verify_models,
        detector=None if args.box or s.detector == "none" else s.detector,
        detector_options=s.detector_options(), precision=s.precision, refine=s.refine, views=s.views,
        **s.backend_options(),
    ) as landmarker:  # fmt: skip
        if args.scheme and landmarker.scheme != args.scheme:
            raise ValueError(f"model {landmarker.name!r} has scheme {landmarker.scheme}, not {args.scheme}")
        loaded = time.monotonic()
        reduce = landmarker.decode_reduction(args.box) if args.box else None  # as the service decodes
        image = decode_image(data, max_pixels=s.max_image_pixels, max_side=s.decode_max_side,
                             min_side=s.min_image_side, reduce=reduce)  # fmt: skip
        decoded = time.monotonic()
        faces = landmarker.predict(image, args.box, max_faces=args.max_faces or s.max_faces, views=args.views,
                                   refine=args.refine)  # fmt: skip
        done = time.monotonic()
    return {
        "model": {"name": landmarker.name, "version": landmarker.version, "scheme": landmarker.scheme,
                  "backend": landmarker.backend.name},
        "image": {"width": image.width, "height": image.height, "format": image.format},
        "box_source": "client" if args.box else (landmarker.detector.name if landmarker.detector else "none"),
        "views": landmarker.cascade.views_for(args.views),
        "faces": [{"box": np.round(f.box, 2).tolist(), "detection_score": f.score,
                   "landmarks": np.round(f.landmarks, 2).tolist()} for f in faces],
        "timings_ms": {"load": round((loaded - started) * 1000, 3),
                       "decode": round((decoded - loaded) * 1000, 3),
                       "landmarks": round((done - decoded) * 1000, 3)},
    }  # fmt: skip


def draw_result(data: bytes, result: dict[str, Any], out: Path) -> None:
    """Draw every face's box and landmarks on the (EXIF-upright) image and save it to ``out``."""
    from PIL import Image, ImageDraw, ImageOps

    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    draw = ImageDraw.Draw(image)
    r = max(1.5, max(image.size) / 300)
    for face in result["faces"]:
        draw.rectangle(face["box"], outline=(0, 200, 255), width=max(1, round(r)))
        for x, y in face["landmarks"]:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 60, 60))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    data = args.image.read_bytes()
    from runtime import BackendUnavailableError

    try:
        result = _remote(args, data) if args.url else _in_process(args, data)
    except (ValueError, BackendUnavailableError, FileNotFoundError, KeyError) as exc:
        # ValueError: undecodable or too large images, boxes that do not fit, unknown models or schemes
        print(f"wingmark predict: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from tools.client import WingmarkAPIError

        if isinstance(exc, WingmarkAPIError):
            print(f"wingmark predict: {exc}", file=sys.stderr)
            return 1
        raise
    if args.draw:
        draw_result(data, result, args.draw)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        m = result["model"]
        model = f"{m['name']}/{m['version']} ({m['scheme']}, {m['backend']})"
        faces = len(result["faces"])
        print(f"{args.image}: {faces} face(s); model {model}; boxes from {result['box_source']}")
        for i, face in enumerate(result["faces"]):
            score = face["detection_score"]
            score_text = "client box" if score is None else f"score {score:.2f}"
            print(f"  face {i}: box {[round(v, 1) for v in face['box']]} ({score_text}), "
                  f"{len(face['landmarks'])} landmarks")  # fmt: skip
        print("  timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings_ms"].items()))
    if args.draw:
        print(f"  drawn to {args.draw}")
    return 0
