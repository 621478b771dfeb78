"""Pydantic models of the HTTP API's responses (they drive the OpenAPI at /docs and validate every
response: ``response_model``), and :class:`LandmarkResult`, one request's result, which builds its
:class:`LandmarkResponse` (boxes and landmarks rounded to 0.01 px; timings in milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from runtime import DecodedImage
from runtime import Face as RuntimeFace
from service.settings import RefineKind, ViewsKind

if TYPE_CHECKING:
    from service.models import LoadedModel

__all__ = [
    "Face",
    "HeadPose",
    "ImageInfo",
    "LandmarkResponse",
    "LandmarkResult",
    "ModelInfo",
    "ModelRef",
    "ModelsResponse",
    "ReadyResponse",
    "Timings",
]


class ModelRef(BaseModel):
    name: str
    version: str
    scheme: str
    backend: str


class ImageInfo(BaseModel):
    width: int = Field(description="original image width in pixels (after EXIF orientation)")
    height: int = Field(description="original image height in pixels (after EXIF orientation)")
    format: str
    decoded_scale: float = Field(
        default=1.0,
        description="original pixels per decoded pixel: 2, 4 or 8 where a JPEG was decoded reduced "
        "(the faces' crops still at full resolution); coordinates are always original pixels",
    )


class HeadPose(BaseModel):
    """Head orientation from the landmarks (a PnP fit of a 3-D mean face; conventions in docs/api.md)."""

    yaw: float = Field(description="degrees; > 0: the nose turns towards the image's right (subject's left)")
    pitch: float = Field(description="degrees; > 0: the nose lifts (the face looks up)")
    roll: float = Field(description="degrees; > 0: the eye line tilts clockwise on screen")
    reprojection_error: float = Field(
        description="RMS pixel distance between the landmarks and the fitted mean face's projection"
    )


class Face(BaseModel):
    box: list[float] = Field(
        description="x1, y1, x2, y2 in original image pixels (the client's or the detector's)"
    )
    detection_score: float | None = Field(description="detector score; null for client boxes")
    landmarks: list[list[float]] = Field(description="[[x, y], ...] in original image pixels, 68 or 19 pairs")
    pose: HeadPose | None = Field(
        default=None, description="only with pose=true: yaw, pitch, roll (R = R_roll R_pitch R_yaw)"
    )


class Timings(BaseModel):
    decode: float
    detect: float
    queue: float
    inference: float
    total: float


class LandmarkResponse(BaseModel):
    model: ModelRef
    image: ImageInfo
    box_source: str = Field(description="'client' or the detector's name")
    views: int = Field(
        default=1,
        description="crops per face its last stage averaged (the request's views, else the service's)",
    )
    refined: bool = Field(
        default=False,
        description="the faces ran the cascade a second time (the request's refine or the service's)",
    )
    faces: list[Face]
    timings_ms: Timings


class ModelInfo(BaseModel):
    name: str
    version: str
    scheme: str
    num_points: int
    backend: str
    device: str
    input_sizes: list[int]
    stages: int
    default_for_scheme: bool
    box_calibrations: list[str]
    ready: bool
    error: str | None = None
    precision: Literal["float", "int8"] = "float"
    precision_reason: str = Field(default="", description="why this precision runs (CPU flags, setting)")
    float_model: str = Field(default="", description="the float model this one runs in place of, or itself")


class DetectorInfo(BaseModel):
    name: str = Field(description="the detector's registry name (WINGMARK_DETECTOR), as in box_source")
    package: str | None = Field(default=None, description="registry package its weights come from")
    version: str | None = None
    licence: str | None = None
    score_threshold: float | None = Field(default=None, description="CNN detectors: the score threshold")

    @classmethod
    def of(cls, detector: Any) -> DetectorInfo | None:
        """The loaded detector's name, weights package and score threshold (None: no detector)."""
        if detector is None:
            return None
        src: dict[str, Any] = getattr(detector, "source", {}) or {}
        return cls(
            name=detector.name,
            package=src.get("package", "dlib" if detector.name == "dlib_hog" else None),
            version=src.get("version"),
            licence=src.get("licence"),
            score_threshold=getattr(detector, "score_threshold", None),
        )


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    detector: DetectorInfo | None = Field(
        default=None, description="the face detector used when a request sends no boxes (null: none)"
    )
    refine: RefineKind = Field(
        default="detector",
        description="which faces run the cascade a second time, from the tight box of the first pass's "
        "points (WINGMARK_REFINE): none, the detected ones, or all",
    )
    views: ViewsKind = Field(
        default=1,
        description="crops per face at the last stage, averaged, where a request asks for none "
        "(WINGMARK_VIEWS; 1: the crop alone)",
    )
    max_views: ViewsKind = Field(
        default=9, description="the most views a request may ask for (WINGMARK_MAX_VIEWS)"
    )


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed", "stopping"]
    models: dict[str, bool]
    errors: dict[str, str] = Field(default_factory=dict)


@dataclass
class LandmarkResult:
    model: LoadedModel
    image: DecodedImage
    box_source: str
    faces: list[RuntimeFace]
    timings_ms: dict[str, float] = field(default_factory=dict)
    with_pose: bool = False  # the request asked for poses: every face carries a "pose" key
    views: int = 1  # crops per face the last stage averaged
    refined: bool = False  # the faces ran the cascade a second time

    def to_response(self) -> LandmarkResponse:
        """The validated response of POST /v1/landmarks."""
        lm = self.model
        faces = []
        for f in self.faces:
            # "pose" is set (even to null) only when asked for: the key is absent otherwise
            pose = {"pose": HeadPose(**f.pose) if f.pose is not None else None} if self.with_pose else {}
            faces.append(
                Face(
                    box=np.round(f.box, 2).tolist(),
                    detection_score=f.score,
                    landmarks=np.round(f.landmarks, 2).tolist(),
                    **pose,
                )
            )
        return LandmarkResponse(
            model=ModelRef(name=lm.name, version=lm.version, scheme=lm.scheme, backend=lm.backend_name),
            image=ImageInfo(
                width=self.image.width,
                height=self.image.height,
                format=self.image.format,
                decoded_scale=round(self.image.scale_x, 6),
            ),
            box_source=self.box_source,
            views=self.views,
            refined=self.refined,
            faces=faces,
            timings_ms=Timings(**self.timings_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        """The response document as JSON-ready data (what the route sends)."""
        return self.to_response().model_dump(exclude_unset=True)

    def server_timing(self) -> str:
        return ", ".join(f"{k};dur={v:.2f}" for k, v in self.timings_ms.items())
