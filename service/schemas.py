"""Pydantic models of the HTTP API's request options and responses (they drive the OpenAPI at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "Face",
    "HeadPose",
    "ImageInfo",
    "LandmarkResponse",
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


class DetectorInfo(BaseModel):
    name: str = Field(description="the detector's registry name (WINGMARK_DETECTOR), as in box_source")
    package: str | None = Field(default=None, description="registry package its weights come from")
    version: str | None = None
    licence: str | None = None
    score_threshold: float | None = Field(default=None, description="CNN detectors: the score threshold")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    detector: DetectorInfo | None = Field(
        default=None, description="the face detector used when a request sends no boxes (null: none)"
    )


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed", "stopping"]
    models: dict[str, bool]
    errors: dict[str, str] = Field(default_factory=dict)
