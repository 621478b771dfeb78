"""Pydantic models of the HTTP API's request options and responses (they drive the OpenAPI at /docs)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "Face",
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


class Face(BaseModel):
    box: list[float] = Field(
        description="x1, y1, x2, y2 in original image pixels (the client's or the detector's)"
    )
    detection_score: float | None = Field(description="detector score; null for client boxes")
    landmarks: list[list[float]] = Field(description="[[x, y], ...] in original image pixels, 68 or 19 pairs")


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


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed", "stopping"]
    models: dict[str, bool]
    errors: dict[str, str] = Field(default_factory=dict)
