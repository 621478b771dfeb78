"""Landmark regression networks behind a tiny registry: ``create_model(name, num_points)``."""

from __future__ import annotations

from train.models import cnn, faceapi, mediapipe, resnet  # noqa: F401  (registers the models)
from train.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
