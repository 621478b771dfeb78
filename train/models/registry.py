"""A tiny model registry (timm style): ``@register_model`` and ``create_model(name, num_points)``.

Every registered factory takes ``num_points`` (K) and returns an ``nn.Module`` with an
``input_size`` attribute (square crop side in pixels) whose ``forward`` maps
``[N, 3, S, S]`` to ``[N, 2K]`` coordinates in crop units (model_store's output convention),
split into ``forward_features`` and ``forward_head``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from torch import Tensor, nn

__all__ = ["LandmarkModel", "create_model", "list_models", "register_model"]


class LandmarkModel(Protocol):
    input_size: int
    num_points: int

    def forward_features(self, x: Tensor) -> Tensor: ...
    def forward_head(self, features: Tensor) -> Tensor: ...
    def __call__(self, x: Tensor) -> Tensor: ...


F = TypeVar("F", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: F) -> F:
    """Register a factory ``fn(num_points, **kwargs) -> nn.Module`` under its function name."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, num_points: int, **kwargs: Any) -> nn.Module:
    """Build a registered model for ``num_points`` landmarks (output ``[N, 2*num_points]``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {list_models()}")
    if num_points < 1:
        raise ValueError("num_points must be positive")
    return _REGISTRY[name](num_points, **kwargs)
