"""Synthetic faces with exact 68- and 19-point ground truth and a controllable pose distribution.

``SyntheticFaces(scheme, num, seed)`` is a ``Sequence[Sample]``: sample ``i`` is rendered on demand by
:func:`train.data.render.render_face` from ``np.random.default_rng([seed, i])``, so it is the same
for the same (seed, i, image size, pose distribution, renderer version) on every machine, whatever
the order of access. With ``cache_dir`` set, rendered samples are kept as small ``.npz`` files.

Poses: yaw, pitch and roll (degrees) come from :class:`PoseDistribution`; the default is
imbalanced like in-the-wild photo collections: mostly near-frontal with a long tail out to
+-90 degrees of yaw.

Jaw labels: ``jaw="surface"`` (the default) labels the hidden side's jaw at its projected 3-D
positions; ``jaw="contour"`` on the head's visible outline, 300-W's convention and the one the real
faces' teachers follow (:mod:`train.data.render`). The convention changes the labels only: the cached
images are shared, and the contour labels are recomputed from the sample's geometry (~2 ms a face).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_store.geometry import tight_box
from model_store.schemes import get_scheme
from train.data.render import JAW_CONVENTIONS, RenderedFace, RenderOptions, render_face
from train.data.types import Sample, SampleSequence

if TYPE_CHECKING:
    from train.data.skin import SkinBank

__all__ = ["RENDERER_VERSION", "PoseDistribution", "SyntheticFaces"]

RENDERER_VERSION = 4  # bump whenever the renderer's output for a given seed changes (invalidates caches)


@dataclass(frozen=True)
class PoseDistribution:
    """Head-pose distribution in degrees.

    Yaw: with probability ``yaw_tail`` uniform in [-yaw_max, yaw_max] (the long tail of profiles),
    otherwise normal(0, yaw_std), clipped to +-yaw_max. Pitch and roll: normal(0, std), clipped.
    Signs: yaw > 0 turns the nose to the image's right, pitch > 0 lifts it, roll > 0 tilts the eye
    line clockwise on screen (see ``train.data.face3d.rotation_matrix``).
    """

    yaw_std: float = 18.0
    yaw_tail: float = 0.15
    yaw_max: float = 90.0
    pitch_std: float = 10.0
    pitch_max: float = 40.0
    roll_std: float = 8.0
    roll_max: float = 40.0

    @classmethod
    def uniform_yaw(cls, yaw_max: float = 90.0) -> PoseDistribution:
        """Yaw uniform in [-yaw_max, yaw_max] (a balanced reference)."""
        return cls(yaw_tail=1.0, yaw_max=yaw_max)

    @classmethod
    def frontal(cls) -> PoseDistribution:
        """Near-frontal only (no tail), e.g. for quick tests."""
        return cls(yaw_std=10.0, yaw_tail=0.0, yaw_max=30.0, pitch_std=5.0, roll_std=5.0)

    def sample(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """(yaw, pitch, roll) in degrees."""
        if rng.random() < self.yaw_tail:
            yaw = rng.uniform(-self.yaw_max, self.yaw_max)
        else:
            yaw = np.clip(rng.normal(0.0, self.yaw_std), -self.yaw_max, self.yaw_max)
        pitch = np.clip(rng.normal(0.0, self.pitch_std), -self.pitch_max, self.pitch_max)
        roll = np.clip(rng.normal(0.0, self.roll_std), -self.roll_max, self.roll_max)
        return float(yaw), float(pitch), float(roll)


class RenderedFaces(SampleSequence):
    """``num`` faces rendered on demand, face ``i`` from ``default_rng([seed, i])`` whose first draw
    is its pose from ``pose``, kept as ``.npz`` under ``cache_dir / _key`` when a cache is set;
    subclasses set those attributes and ``_arrays(i)``."""

    scheme: str
    name: str
    num: int
    seed: int
    pose: PoseDistribution
    cache_dir: Path | None
    _key: str

    def __len__(self) -> int:
        return self.num

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.num):
            yield self._load(i)

    def poses(self) -> np.ndarray:
        """[N, 3] yaw, pitch, roll (degrees) of every sample, without rendering."""
        return np.array([self.pose.sample(np.random.default_rng([self.seed, i])) for i in range(self.num)])

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Render face ``i``: image [S, S, 3] uint8, points68, points19 and its meta."""
        raise NotImplementedError

    def _relabel68(self, i: int, points68: np.ndarray) -> np.ndarray:
        """Face ``i``'s 68 labels as this set labels them (cached arrays hold the renderer's own)."""
        return points68

    def _load(self, index: int) -> Sample:
        i = int(index)
        if i < 0:
            i += self.num
        if not 0 <= i < self.num:
            raise IndexError(f"index {index} out of range for {self.num} samples")
        path = self.cache_dir / self._key / f"{i:07d}.npz" if self.cache_dir is not None else None
        if path is not None and path.exists():
            with np.load(path) as z:
                image, p68, p19 = z["image"], z["points68"], z["points19"]
                meta = json.loads(str(z["meta"]))
        else:
            image, p68, p19, meta = self._arrays(i)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # concurrent writers
                np.savez_compressed(tmp, image=image, points68=p68, points19=p19, meta=json.dumps(meta))
                tmp.replace(path)
        if self.scheme == "ibug68":
            p68 = self._relabel68(i, p68)
        points = np.asarray(p68 if self.scheme == "ibug68" else p19, dtype=np.float32)
        meta = {**meta, "index": i, "seed": self.seed, "subset": self.name}
        box = tight_box(points).astype(np.float32)
        return Sample(image=image, points=points, box=box, scheme=self.scheme, meta=meta)


class SyntheticFaces(RenderedFaces):
    """``num`` synthetic faces of ``image_size`` x ``image_size`` pixels in ``scheme`` (ibug68 | aflw19)."""

    def __init__(
        self,
        scheme: str,
        num: int,
        seed: int,
        image_size: int = 256,
        pose: PoseDistribution | None = None,
        cache_dir: Path | None = None,
        options: RenderOptions | None = None,
        skin: SkinBank | None = None,
        jaw: str = "surface",
    ) -> None:
        self.scheme = get_scheme(scheme).name
        if jaw not in JAW_CONVENTIONS:
            raise ValueError(f"jaw must be one of {JAW_CONVENTIONS}, got {jaw!r}")
        self.jaw = jaw
        if num < 0:
            raise ValueError(f"num must be >= 0, got {num}")
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.num = int(num)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.pose = pose or PoseDistribution()
        self.options = options or RenderOptions()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.name = f"synthetic-{self.scheme}" + ("-contour" if jaw == "contour" else "")
        self.skin = skin
        fields: dict[str, Any] = {
            "v": RENDERER_VERSION,
            "seed": self.seed,
            "size": self.image_size,
            "pose": asdict(self.pose),
            "options": asdict(self.options),
        }
        if skin is not None:  # only then: the cache keys of procedural-skin faces stay as they were
            fields["skin"] = skin.fingerprint
        key = json.dumps(fields, sort_keys=True)
        self._key = hashlib.sha256(key.encode()).hexdigest()[:16]

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], scheme: str) -> SyntheticFaces:
        """From a config's dataset spec ``{kind: synthetic, num, seed, image_size, pose, cache_dir,
        real_skin, jaw}``; ``real_skin: {root: cache/real, size: 32}`` gives the faces real cheek-skin patches
        from the real-face cache's train split (:mod:`train.data.skin`); ``jaw: contour`` labels the jaw
        on the visible outline (300-W), ``surface`` (the default) at its projected 3-D points."""
        pose = spec.get("pose")
        real_skin = spec.get("real_skin")
        skin = None
        if real_skin:
            from train.data.skin import load_skin_bank

            skin = load_skin_bank(Path(real_skin.get("root", "cache/real")), int(real_skin.get("size", 32)))
        return cls(
            scheme,
            int(spec["num"]),
            int(spec.get("seed", 0)),
            image_size=int(spec.get("image_size", 256)),
            pose=PoseDistribution(**pose) if pose else None,
            cache_dir=spec.get("cache_dir"),
            skin=skin,
            jaw=str(spec.get("jaw", "surface")),
        )

    def _geometry(self, i: int) -> RenderedFace:
        """Face ``i``'s labels (this set's jaw convention) without rendering its image."""
        rng = np.random.default_rng([self.seed, i])
        yaw, pitch, roll = self.pose.sample(rng)
        return render_face(
            rng, self.image_size, yaw, pitch, roll, self.options, geometry_only=True, jaw=self.jaw
        )

    def shapes(self) -> np.ndarray:
        """[N, K, 2] landmarks of every sample in this scheme, computed without rendering images."""
        out = np.empty((self.num, get_scheme(self.scheme).num_points, 2), dtype=np.float32)
        for i in range(self.num):
            face = self._geometry(i)
            out[i] = face.points68 if self.scheme == "ibug68" else face.points19
        return out

    def _relabel68(self, i: int, points68: np.ndarray) -> np.ndarray:
        return points68 if self.jaw == "surface" else self._geometry(i).points68

    def _arrays(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        rng = np.random.default_rng([self.seed, i])
        yaw, pitch, roll = self.pose.sample(rng)
        patch = None
        if self.skin is not None:  # its own stream: the render's draws stay those of the seed
            patch = self.skin.pick(np.random.default_rng([self.seed, i, 1]))
        face = render_face(rng, self.image_size, yaw, pitch, roll, self.options, skin_patch=patch)
        meta = face.meta if patch is None else {**face.meta, "skin_patch": patch.source}
        return face.image, face.points68, face.points19, meta
