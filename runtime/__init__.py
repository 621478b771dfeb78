"""Landmarking in-process, torch-free: decoding, detectors, backends, the cascade and the Landmarker facade.

    from runtime import Landmarker
    landmarker = Landmarker.from_store("faceapi-ibug68")        # ONNX Runtime on the CPU, dlib HOG
    for face in landmarker.predict(open("face.jpg", "rb").read()):
        print(face.box, face.landmarks.shape)                   # [4], [68, 2] original image pixels

Layers (checked by import-linter): ``model_store`` < ``runtime`` < {``service``, ``train``, ``tools``}.
Nothing here imports torch, ``service`` or ``train``; importing this package loads no model.
"""

from __future__ import annotations

from runtime.backends import Backend, BackendUnavailableError, create_backend
from runtime.cascade import Cascade, FaceJob
from runtime.decode import (
    DecodeDeferredError,
    DecodedImage,
    ImageDecodeError,
    ImageTooLargeError,
    decode_image,
)
from runtime.detectors import Detections, Detector, create_detector
from runtime.landmarker import Face, FoundFaces, InvalidBoxesError, Landmarker, check_boxes
from runtime.poses import face_poses

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "Cascade",
    "DecodeDeferredError",
    "DecodedImage",
    "Detections",
    "Detector",
    "Face",
    "FaceJob",
    "FoundFaces",
    "ImageDecodeError",
    "ImageTooLargeError",
    "InvalidBoxesError",
    "Landmarker",
    "check_boxes",
    "create_backend",
    "create_detector",
    "decode_image",
    "face_poses",
]
