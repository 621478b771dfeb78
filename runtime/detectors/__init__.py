"""Face detectors behind a small registry: one module per detector, one ``@register_detector`` each.

A new detector is a module in this package whose class is decorated with
``@register_detector("<name>")`` and imported at the bottom of this file; :func:`create_detector`
then builds it by name (the service's ``WINGMARK_DETECTOR``, ``wingmark predict --detector``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from runtime.detectors.base import (
    Detections,
    Detector,
    box_from_dlib_rect,
    box_iou,
    dlib_rect_from_box,
    eye_roll,
)
from runtime.detectors.calibration import fit_box_calibration

__all__ = [
    "DETECTORS",
    "Detections",
    "Detector",
    "box_from_dlib_rect",
    "box_iou",
    "create_detector",
    "dlib_rect_from_box",
    "eye_roll",
    "fit_box_calibration",
    "register_detector",
]

DETECTORS: dict[str, Callable[..., Detector]] = {}

T = TypeVar("T", bound=type)


def register_detector(name: str) -> Callable[[T], T]:
    """Class decorator: make the detector class buildable as ``create_detector(name, **options)``."""

    def add(cls: T) -> T:
        if name in DETECTORS or name == "none":
            raise ValueError(f"detector name {name!r} is taken")
        DETECTORS[name] = cls
        return cls

    return add


def create_detector(name: str, **options: Any) -> Detector | None:
    """A registered detector by name, built with ``options``; ``none`` -> None (requests must send boxes)."""
    if name == "none":
        return None
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; known: {[*DETECTORS, 'none']}")
    return DETECTORS[name](**options)


# The registered detectors (each module registers itself on import; importing one costs no model load).
from runtime.detectors import (  # noqa: E402, F401
    blazeface,
    dlib_hog,
    ssd_blazeface,
    ssd_mobilenet_v1,
    tiny_face_detector,
)
