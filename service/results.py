"""The result of one landmark request and its response document (``service.schemas.LandmarkResponse``).

Boxes and landmarks are rounded to 0.01 px in the response; timings are in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime import DecodedImage, Face
from service.models import LoadedModel
from service.schemas import Face as FaceModel
from service.schemas import HeadPose, ImageInfo, LandmarkResponse, ModelRef, Timings

__all__ = ["LandmarkResult"]


@dataclass
class LandmarkResult:
    model: LoadedModel
    image: DecodedImage
    box_source: str
    faces: list[Face]
    timings_ms: dict[str, float] = field(default_factory=dict)
    with_pose: bool = False  # the request asked for poses: every face carries a "pose" key

    def to_response(self) -> LandmarkResponse:
        """The validated response of POST /v1/landmarks."""
        lm = self.model
        faces = []
        for f in self.faces:
            # "pose" is set (even to null) only when asked for: the key is absent otherwise
            pose = {"pose": HeadPose(**f.pose) if f.pose is not None else None} if self.with_pose else {}
            faces.append(
                FaceModel(
                    box=np.round(f.box, 2).tolist(),
                    detection_score=f.score,
                    landmarks=np.round(f.landmarks, 2).tolist(),
                    **pose,
                )
            )
        return LandmarkResponse(
            model=ModelRef(name=lm.name, version=lm.version, scheme=lm.scheme, backend=lm.backend_name),
            image=ImageInfo(width=self.image.width, height=self.image.height, format=self.image.format),
            box_source=self.box_source,
            faces=faces,
            timings_ms=Timings(**self.timings_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        """The response document as JSON-ready data (what the route sends)."""
        return self.to_response().model_dump(exclude_unset=True)

    def server_timing(self) -> str:
        return ", ".join(f"{k};dur={v:.2f}" for k, v in self.timings_ms.items())
