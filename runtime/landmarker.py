"""The in-process facade: ``Landmarker.from_store(model).predict(image, boxes=None) -> list[Face]``.

One path for every user -- the service, ``wingmark predict``, evaluation, benchmarks, batch jobs:

    decode (bytes)  ->  faces: the caller's boxes or the detector's (with each face's roll where the
    detector gives eye keypoints)  ->  the source's box calibration (the manifest's, else the
    detector's own; detector box -> tight landmark box)  ->  the cascade (:mod:`runtime.cascade`)
    ->  (where ``refine`` says so) the cascade again from the tight box of its own points
    ->  landmarks in original image pixels (+ head pose on request)

The second pass (``refine``, :data:`REFINE`; by default for detected faces only): a detector's box is off on
turned faces; the first pass's points give the tight box stage 1 was trained on (docs/models.md).
Coordinates inside are those of the decoded pixels (maybe a reduced JPEG decode, :mod:`runtime.decode`);
boxes and landmarks are in original image pixels at the edges. The service calls the steps one by one
(find_faces, tight_boxes, the cascade's stages through its batchers, faces); predict composes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import BoxCalibration, tight_box
from model_store.store import DEFAULT_MODELS, ModelStore, ModelVersion
from runtime.backends import Backend, create_backend
from runtime.boxes import MIN_BOX_SIDE, InvalidBoxesError, check_boxes
from runtime.cascade import Cascade
from runtime.decode import DecodedImage, decode_image, jpeg_size, largest_reduction
from runtime.detectors import Detector, create_detector, eye_roll
from runtime.poses import face_poses

__all__ = [
    "CLIENT",
    "LATER_STAGE_MARGIN",
    "MIN_BOX_SIDE",
    "REFINE",
    "Face",
    "FoundFaces",
    "InvalidBoxesError",
    "Landmarker",
    "check_boxes",
    "face_poses",
]

CLIENT = "client"  # the box source (and calibration name) of boxes the caller gives
# a later stage's crop follows the previous stage's points, whose box can be smaller than the face
# box stage 1 cropped; reduced decoding counts it at this fraction of the stage-1 box
LATER_STAGE_MARGIN = 0.8
# which faces run the cascade a second time, from the tight box of the first pass's points:
# none, those a detector found (the default), or every face (the caller's boxes too)
REFINE = ("never", "detector", "always")


@dataclass
class Face:
    """One face: its box and landmarks in original image pixels."""

    box: np.ndarray  # [4] float64 x1, y1, x2, y2: the caller's box or the detector's
    score: float | None  # the detector's score; None for the caller's boxes
    landmarks: np.ndarray  # [K, 2] float64
    pose: dict[str, float] | None = None  # yaw, pitch, roll, reprojection_error (predict(pose=True))


@dataclass(frozen=True)
class FoundFaces:
    """The faces of one image before landmarking: boxes in original pixels, where they came from."""

    boxes: np.ndarray  # [N, 4] float64 original image pixels
    scores: list[float | None]
    source: str  # "client" or the detector's name (also the calibration applied)
    angles: np.ndarray | None = None  # [N] roll, radians, from the detector's eye keypoints (stage 1 upright)


class Landmarker:
    """A model version on a backend, with an optional face detector."""

    def __init__(
        self,
        model: ModelVersion,
        backend: Backend,
        detector: Detector | None = None,
        refine: str = "detector",
        views: int = 1,
    ) -> None:
        self.refine = self.refine_policy(refine)
        self.model = model
        self.backend = backend
        self.detector = detector
        self.cascade = Cascade.from_manifest(model.manifest, backend.run, views)
        # the detector's own per-scheme calibration, for a manifest that has none for it
        own = getattr(detector, "calibration", None)
        self.own_calibration: BoxCalibration | None = own(self.scheme) if callable(own) else None

    @classmethod
    def from_store(
        cls,
        model: str | None = None,
        *,
        scheme: str = "ibug68",
        version: str = "latest",
        store: ModelStore | str | Path | None = None,
        backend: str = "onnxruntime",
        device: str = "cpu",
        max_batch_size: int = 32,
        detector: str | Detector | None = "dlib_hog",
        detector_options: dict[str, Any] | None = None,
        verify: bool = True,
        precision: str = "float",
        refine: str = "detector",
        views: int = 1,
        **backend_options: Any,
    ) -> Landmarker:
        """Load ``model`` (default: :meth:`default_model` of ``scheme``) from the store onto a backend.

        ``precision``: ``float`` (default) runs the model as named; ``auto`` or ``int8`` its
        ``NAME-int8`` variant where :func:`runtime.precision.choose_variant` picks it (as the service
        does by default).

        ``detector``: a registered detector's name, a Detector, or None/"none" (callers send boxes).
        ``refine``: which faces get the second pass (:data:`REFINE`); ``views``: ``runtime.cascade.VIEWS``.
        ``backend_options`` go to the backend (e.g. ``threads`` for ONNX Runtime).
        """
        st = store if isinstance(store, ModelStore) else ModelStore(None if store is None else Path(store))
        mv = st.resolve(model or cls.default_model(st, scheme), version)
        if precision != "float":
            from runtime.precision import choose_variant

            choice = choose_variant(st, mv.name, mv.version, setting=precision, backend=backend)  # type: ignore[arg-type]
            mv = st.resolve(choice.name, choice.version)
        if verify:
            st.verify(mv)
        det = create_detector(detector, **(detector_options or {})) if isinstance(detector, str) else detector
        runner = create_backend(backend, mv, device=device, max_batch_size=max_batch_size, **backend_options)
        return cls(mv, runner, det, refine, views)

    @staticmethod
    def default_model(store: ModelStore, scheme: str) -> str:
        """The scheme's default model (``DEFAULT_MODELS``) where the store has it, else the first of the
        store's models with that scheme (as the service picks)."""
        names = store.list_models()
        if DEFAULT_MODELS.get(scheme) in names:
            return DEFAULT_MODELS[scheme]
        for name in names:
            if store.resolve(name, "latest").manifest.scheme == scheme:
                return name
        raise ValueError(f"no model for scheme {scheme!r} in the store at {store.root}")

    @property
    def name(self) -> str:
        return self.model.manifest.name

    @property
    def version(self) -> str:
        return self.model.manifest.version

    @property
    def scheme(self) -> str:
        return self.model.manifest.scheme

    def calibration(self, source: str) -> BoxCalibration:
        """The manifest's map from ``source``'s boxes ("client" or a detector's name) to tight boxes;
        where the manifest has none, the detector's own for this scheme, else the identity."""
        spec = self.model.manifest.box_calibrations.get(source)
        if spec is not None:
            return spec.to_calibration()
        if self.detector is not None and source == self.detector.name and self.own_calibration is not None:
            return self.own_calibration
        return BoxCalibration()

    @property
    def calibration_names(self) -> list[str]:
        """The box sources with a calibration: the manifest's, and the detector's own where it has none."""
        names = set(self.model.manifest.box_calibrations)
        if self.detector is not None and self.own_calibration is not None:
            names.add(self.detector.name)
        return sorted(names)

    def decode_reduction(self, boxes: np.ndarray | Sequence[Sequence[float]], source: str = CLIENT) -> int:
        """The largest JPEG reduction (1, 2, 4 or 8; ``runtime.decode``) at which every stage's crop of
        every face is still cut at full resolution: at least one decoded pixel per crop pixel.

        ``boxes [N, 4]``: the faces in original pixels, from ``source`` (its calibration gives the
        tight box). A stage-1 crop spans ``scale * max(w, h)`` of the tight box; a later stage's spans
        the same of its predicted points' box, counted at :data:`LATER_STAGE_MARGIN` of it.
        """
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            return 1
        tight = self.calibration(source).apply(b)
        side = float(np.maximum(tight[:, 2] - tight[:, 0], tight[:, 3] - tight[:, 1]).min())
        stages = self.cascade.geometry.stages
        per_px = min(
            g.crop_rule.scale * (1.0 if i == 0 else LATER_STAGE_MARGIN) / g.input_size
            for i, g in enumerate(stages)
        )
        most = side * per_px  # decoded pixels may shrink by this much before a crop pixel outgrows one
        return largest_reduction(most)

    def detect_reduction(
        self, data: bytes, *, min_face: float | None = None, max_side: int | None = None
    ) -> int | None:
        """The JPEG reduction to decode ``data`` at for detection: the detector's own
        (``decode_reduction``: the views of its net see full-resolution pixels; 1 for a detector
        without one), never finer than ``max_side``'s rule. None: not a JPEG, or no detector."""
        size = jpeg_size(data)
        if size is None or self.detector is None:
            return None
        own = getattr(self.detector, "decode_reduction", None)
        r = int(own(size[0], size[1], min_face)) if callable(own) else 1
        return max(r, largest_reduction(max(size) / max_side)) if max_side else r

    def first_reduction(
        self,
        image: object,
        boxes: np.ndarray | Sequence[Sequence[float]] | None,
        *,
        min_face: float | None = None,
        max_side: int | None = None,
    ) -> int | None:
        """The JPEG reduction of a request's first decode, as the service and :meth:`predict` decode: with
        ``boxes`` what every face's crops allow (:meth:`decode_reduction`), without them the detector's
        working size (:meth:`detect_reduction`; :meth:`crop_reduction` says after detection whether the
        faces need a finer decode). None: decode at full size (not JPEG bytes, or no detector)."""
        if boxes is not None:
            return self.decode_reduction(boxes)
        if not isinstance(image, bytes):
            return None
        return self.detect_reduction(image, min_face=min_face, max_side=max_side)

    def crop_reduction(
        self, image: DecodedImage, found: FoundFaces, max_side: int | None = None
    ) -> int | None:
        """After detection on a reduced decode: the reduction the found faces' crops need
        (:meth:`decode_reduction`, never finer than ``max_side``'s rule) where it is finer than the
        image's; None where the image serves (no face, or pixels enough)."""
        if len(found.boxes) == 0:
            return None
        r = self.decode_reduction(found.boxes, found.source)
        if max_side:
            r = max(r, largest_reduction(max(image.width, image.height) / max_side))
        return r if r < round(max(image.scale_x, image.scale_y)) else None

    # -- the steps ---------------------------------------------------------------------------------
    def find_faces(
        self,
        image: DecodedImage,
        boxes: np.ndarray | None = None,
        *,
        max_faces: int | None = None,
        min_face: float | None = None,
    ) -> FoundFaces:
        """The caller's ``boxes [N, 4]`` (original pixels; checked, :func:`check_boxes`), or the
        detector's best ``max_faces``; ``min_face`` (original pixels; default the detector's own) is the
        smallest face to look for."""
        if boxes is not None:
            b = check_boxes(boxes, image)
            return FoundFaces(b, [None] * len(b), CLIENT)
        if self.detector is None:
            raise ValueError("no face detector is configured: send boxes")
        smallest = min_face if min_face is not None else getattr(self.detector, "min_face", None)
        dets = self.detector.detect(
            image.pixels, min_face=None if smallest is None else float(smallest) / image.scale_x
        )
        scale = np.array([image.scale_x, image.scale_y, image.scale_x, image.scale_y])
        # the detector's eyes (where it gives them): stage 1 starts with the face level
        # (NaN keypoints: a face the detector has no eyes for starts upright)
        angles = None if dets.keypoints is None else np.nan_to_num(eye_roll(dets.keypoints[:max_faces]))
        return FoundFaces(
            dets.boxes[:max_faces] * scale,
            [float(v) for v in dets.scores[:max_faces]],
            self.detector.name,
            angles,
        )

    def tight_boxes(self, image: DecodedImage, found: FoundFaces) -> np.ndarray:
        """Stage 1's boxes [N, 4]: the source's calibration applied, in the decoded pixels."""
        scale = np.array([image.scale_x, image.scale_y, image.scale_x, image.scale_y])
        return self.calibration(found.source).apply(found.boxes / scale)

    def refine_policy(self, refine: str | None = None) -> str:
        """``refine`` (one of :data:`REFINE`, else ValueError), or the landmarker's own (None)."""
        policy = self.refine if refine is None else refine
        if policy not in REFINE:
            raise ValueError(f"refine: one of {list(REFINE)}, not {policy!r}")
        return policy

    def refines(self, found: FoundFaces, refine: str | None = None) -> bool:
        """Whether ``found``'s faces run the cascade a second time (by :meth:`refine_policy`)."""
        policy = self.refine_policy(refine)
        return policy == "always" or (policy == "detector" and found.source != CLIENT)

    @staticmethod
    def refine_boxes(points: np.ndarray) -> np.ndarray:
        """The second pass's stage-1 boxes [N, 4], upright: the tight box of the first pass's points."""
        return tight_box(np.asarray(points, dtype=np.float64))

    def cascade_points(
        self,
        pixels: np.ndarray,
        tight: np.ndarray,
        found: FoundFaces,
        views: int | None = None,
        refine: str | None = None,
    ) -> np.ndarray:
        """An image's tight boxes [N, 4] -> points [N, K, 2]; again where :meth:`refines` (``refine``: its,
        ``views``: ``Cascade.run``'s; None: the landmarker's own)."""
        images = [pixels] * len(tight)
        points = self.cascade.run(images, tight, angles=found.angles, views=views)[-1]
        if self.refines(found, refine):
            points = self.cascade.run(images, self.refine_boxes(points), views=views)[-1]
        return points

    def faces(self, image: DecodedImage, found: FoundFaces, points: np.ndarray) -> list[Face]:
        """The cascade's final points [N, K, 2] (decoded pixels) -> faces in original pixels."""
        xy = np.asarray(points, dtype=np.float64) * np.array([image.scale_x, image.scale_y])
        return [Face(b, s, p) for b, s, p in zip(found.boxes, found.scores, xy, strict=True)]

    # -- all of them ---------------------------------------------------------------------------------
    def predict(
        self,
        image: bytes | np.ndarray | DecodedImage,
        boxes: np.ndarray | Sequence[Sequence[float]] | None = None,
        *,
        max_faces: int | None = None,
        pose: bool = False,
        max_pixels: int = 40_000_000,
        max_side: int | None = 2048,
        views: int | None = None,
        refine: str | None = None,
    ) -> list[Face]:
        """Landmarks of every face in ``image`` (encoded bytes, [H, W, 3] uint8 RGB, or decoded).

        ``boxes [N, 4]`` (original pixels) skip detection. Bytes are decoded as the service decodes
        them (``max_pixels``; JPEGs with boxes at the reduction the faces allow, :meth:`decode_reduction`;
        without boxes at the detector's working size, :meth:`detect_reduction`, and again finer where the
        found faces' crops need it, :meth:`crop_reduction`; never finer than ``max_side``'s rule).
        ``views``, ``refine``: this call's (:meth:`cascade_points`).
        """
        self.cascade.views_for(views)  # a count not in VIEWS, a refine not in REFINE: ValueError at once
        self.refine_policy(refine)
        reduce = self.first_reduction(image, None if boxes is None else check_boxes(boxes), max_side=max_side)
        decoded = self._decoded(image, max_pixels=max_pixels, max_side=max_side, reduce=reduce)
        found = self.find_faces(decoded, None if boxes is None else np.asarray(boxes), max_faces=max_faces)
        finer = (
            self.crop_reduction(decoded, found, max_side) if reduce is not None and boxes is None else None
        )
        if finer is not None:
            decoded = self._decoded(image, max_pixels=max_pixels, max_side=max_side, reduce=finer)
        if len(found.boxes) == 0:
            return []
        points = self.cascade_points(decoded.pixels, self.tight_boxes(decoded, found), found, views, refine)
        faces = self.faces(decoded, found, points)
        if pose:
            poses = face_poses([f.landmarks for f in faces], self.scheme, decoded.width, decoded.height)
            for face, p in zip(faces, poses, strict=True):
                face.pose = p
        return faces

    def landmarks(
        self,
        images: Sequence[np.ndarray],
        tight_boxes: np.ndarray,
        *,
        batch_size: int | None = None,
        timings: dict[str, float] | None = None,
        views: int | None = None,
    ) -> list[np.ndarray]:
        """Evaluation's entry: images (one per face), TIGHT boxes [N, 4] -> [N, K, 2] per stage."""
        return self.cascade.run(images, tight_boxes, batch_size=batch_size, timings=timings, views=views)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Landmarker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _decoded(
        image: bytes | np.ndarray | DecodedImage,
        *,
        max_pixels: int,
        max_side: int | None,
        reduce: int | None = None,
    ) -> DecodedImage:
        if isinstance(image, DecodedImage):
            return image
        if isinstance(image, bytes | bytearray | memoryview):
            return decode_image(bytes(image), max_pixels=max_pixels, max_side=max_side, reduce=reduce)
        pixels = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] uint8 RGB image, got shape {list(pixels.shape)}")
        h, w = pixels.shape[:2]
        return DecodedImage(pixels=pixels, width=w, height=h, format="array", mode="RGB", orientation=1)
