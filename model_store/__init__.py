"""wingmark's model store: landmark schemes, crop geometry, preprocessing and versioned models.

This package is the contract between ``train`` and ``service`` and imports no torch.
"""

from model_store.geometry import BoxCalibration, CropRule
from model_store.manifest import Manifest, StageSpec
from model_store.preprocess import Normalisation
from model_store.schemes import AFLW19, IBUG68, SCHEMES, Scheme, get_scheme
from model_store.store import IntegrityError, ModelNotFoundError, ModelStore, ModelVersion

__all__ = [
    "AFLW19",
    "IBUG68",
    "SCHEMES",
    "BoxCalibration",
    "CropRule",
    "IntegrityError",
    "Manifest",
    "ModelNotFoundError",
    "ModelStore",
    "ModelVersion",
    "Normalisation",
    "Scheme",
    "StageSpec",
    "get_scheme",
]
