"""Torch-side data plumbing: dataset specs -> samples, augmented crop datasets, fixed eval crops.

Samples are materialised once (synthetic faces are rendered up front, a few ms each) so the
training loop only warps crops: a ``DataLoader`` with ``num_workers=0`` is fast enough on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from model_store.cascade import crop as window_crop
from model_store.cascade import stage_matrices
from model_store.geometry import CropRule, apply_affine, invert_affine, tight_box
from model_store.preprocess import Normalisation, to_input
from model_store.schemes import Scheme
from train.data.types import Sample, client_boxes

__all__ = ["CropDataset", "EvalCrops", "load_samples", "make_eval_crops", "training_indices"]

_CACHE: dict[str, list[Sample]] = {}


def load_samples(spec: Mapping[str, Any], scheme: str, *, progress: bool = True) -> list[Sample]:
    """Materialise a dataset spec (see train.config) as a list of samples (memoised per process).

    ``spec["workers"]`` (default 2) processes render/load in parallel; ``spec["limit"]`` keeps
    the first samples only."""
    key = json.dumps({"scheme": scheme, **dict(spec)}, sort_keys=True, default=str)
    if key in _CACHE:
        return _CACHE[key]
    kind = spec["kind"]
    if kind == "mix":
        samples = _load_mix(spec, scheme, progress)
        _CACHE[key] = samples
        return samples
    src: Sequence[Sample]
    if kind == "synthetic":
        from train.data.synthetic import SyntheticFaces

        src = SyntheticFaces.from_spec(spec, scheme)
    elif kind == "scan":
        from train.data.scan import ScanFaces

        src = ScanFaces.from_spec(spec, scheme)
    elif kind == "repose":
        from train.data.repose import ReposedFaces

        src = ReposedFaces.from_spec(spec, scheme)
        if len(src) == 0:
            raise ValueError(f"no training face with a mesh under {spec.get('root')} (build_mesh3d first)")
    elif kind == "300w":
        from train.data.pts300w import load_300w

        src = load_300w(spec["root"], spec["split"])
    elif kind == "aflw":
        from train.data.aflw import load_aflw_full

        src = load_aflw_full(spec["mat"], spec["images"], spec["split"])
    elif kind == "wflw":
        from train.data.wflw import load_wflw

        src = load_wflw(spec["root"], spec["split"], scheme)
    elif kind == "real":
        from train.data.real import RealFaces

        if scheme not in {RealFaces.scheme, "aflw19"}:
            raise ValueError(
                f"real faces carry {RealFaces.scheme} labels (or aflw19 from them), not {scheme!r}"
            )
        sources = spec.get("sources")
        cap = spec.get("max_per_identity")
        src = RealFaces(
            spec["root"],
            str(spec.get("split", "train")),
            sources=sources,
            loose=bool(spec.get("loose", False)),
            kinds=spec.get("kinds"),
            max_per_identity=None if cap is None else int(cap),
            client_box=str(spec.get("client_box", "tight")),
        )
        if len(src) == 0:
            raise ValueError(
                f"no kept real faces in split {spec.get('split', 'train')!r} under {spec['root']}"
            )
    else:
        raise ValueError(
            f"unknown dataset kind {kind!r} (synthetic | scan | real | repose | mix | 300w | aflw | wflw)"
        )
    samples = _materialise(src, int(spec.get("workers", 2)), f"load {kind}", progress)
    if kind == "real" and scheme == "aflw19":
        samples = [_aflw19_from_68(s) for s in samples]
    for s in samples:
        if s.scheme != scheme:
            raise ValueError(f"dataset scheme {s.scheme!r} does not match data.scheme {scheme!r}")
    if "limit" in spec:
        samples = samples[: int(spec["limit"])]
    _CACHE[key] = samples
    return samples


def _aflw19_from_68(sample: Sample) -> Sample:
    """A 68-point sample as 19 AFLW points (``model_store.meanshape.aflw19_from_68``: means of 68-point
    groups, as the synthetic faces' 19 points are made), boxed by the tight box of the 19 points."""
    from model_store.meanshape import aflw19_from_68

    points = aflw19_from_68(sample.points).astype(np.float32)
    box = tight_box(points).astype(np.float32)
    meta = {**sample.meta, "from": "ibug68"}
    if "point_weights" in meta:  # a 19-point weight is the mean weight of the 68-point group it averages
        w68 = np.asarray(meta["point_weights"], dtype=np.float64)
        meta["point_weights"] = aflw19_from_68(np.stack([w68, w68], axis=1))[:, 0].astype(np.float32)
    return dataclasses.replace(sample, points=points, box=box, scheme="aflw19", meta=meta)


def _load_mix(spec: Mapping[str, Any], scheme: str, progress: bool) -> list[Sample]:
    """``{kind: mix, parts: [{name, repeat, <dataset spec>}, ...]}``: the parts' samples in order,
    each part ``repeat`` times (an integer >= 1; the same Sample objects, no copies), every sample's
    ``meta["subset"]`` set to the part's ``name`` (default its kind) so evaluations break down by part."""
    parts = spec.get("parts")
    if not isinstance(parts, Sequence) or not parts:
        raise ValueError("a mix dataset needs a non-empty list 'parts' of dataset specs")
    out: list[Sample] = []
    for part in parts:
        if not isinstance(part, Mapping) or "kind" not in part:
            raise ValueError(f"mix part {part!r} is not a dataset spec with a 'kind'")
        repeat = part.get("repeat", 1)
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise ValueError(f"mix part repeat must be an integer >= 1, got {repeat!r}")
        name = str(part.get("name", part["kind"]))
        inner = {k: v for k, v in part.items() if k not in {"name", "repeat"}}
        loaded = [
            dataclasses.replace(s, meta={**s.meta, "subset": name})
            for s in load_samples(inner, scheme, progress=progress)
        ]
        out.extend(loaded * repeat)
    return out


def _chunk(src: Sequence[Sample], start: int, stop: int) -> list[Sample]:
    return [src[i] for i in range(start, stop)]


def _materialise(src: Sequence[Sample], workers: int, desc: str, progress: bool) -> list[Sample]:
    """All samples of ``src`` (rendering synthetic faces, ~0.1-0.2 s each at 256 px), in ``workers``
    processes when there are many."""
    n = len(src)
    bar = tqdm(total=n, desc=desc, leave=False, disable=not progress)
    if workers <= 1 or n < 64:
        out = []
        for i in range(n):
            out.append(src[i])
            bar.update(1)
        bar.close()
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    step = max(8, n // (workers * 8))
    bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
    parts: dict[int, list[Sample]] = {}
    # fork (Linux): no re-import of the caller's __main__; the children only run numpy/Pillow code
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
        futures = {pool.submit(_chunk, src, a, b): a for a, b in bounds}
        from concurrent.futures import as_completed

        for fut in as_completed(futures):
            parts[futures[fut]] = fut.result()
            bar.update(len(parts[futures[fut]]))
    bar.close()
    return [s for a, _ in bounds for s in parts[a]]


def training_indices(samples: Sequence[Sample], pdb: Mapping[str, Any], seed: int) -> np.ndarray:
    """Indices of one training epoch: all samples, or the PDB-balanced multiset (with duplicates)."""
    if not pdb.get("enabled", False):
        return np.arange(len(samples))
    from train.data.pdb import pdb_indices

    shapes = np.stack([s.points for s in samples]).astype(np.float64)  # (N, K, 2)
    max_factor = pdb.get("max_factor")
    rng = np.random.default_rng(seed)
    idx = pdb_indices(
        shapes, int(pdb.get("num_bins", 9)), rng, max_factor=None if max_factor is None else float(max_factor)
    )
    return np.asarray(idx)


class CropDataset(Dataset[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Augmented training crops: item -> (input ``[3, S, S]`` float32, target ``[2K]`` crop units,
    per-point weights ``[K]`` float32).

    Weights come from ``sample.meta["point_weights"]`` (e.g. the real faces' teacher agreement per
    point), all ones where a sample has none; a mirrored crop re-orders them with its points.

    ``indices`` select (possibly repeated, PDB) samples; every item draws its augmentation from
    ``(seed, epoch, position)`` so runs are reproducible and workers never share a stream.
    ``init_points [N, K, 2]`` (image px, stage-1 predictions) make stage-2 re-aligned crops;
    ``residuals`` (a ``train.data.residuals.ResidualBank``) instead re-align every item on its
    ground truth moved by a freshly drawn held-out stage-1 residual. ``face_weights [N]`` (one per
    sample, e.g. :func:`train.losses.normaliser_weights`) multiply every point weight of a face.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        indices: np.ndarray,
        scheme: Scheme,
        size: int,
        rule: CropRule,
        norm: Normalisation,
        augment: Any,
        seed: int,
        init_points: np.ndarray | None = None,
        residuals: Any = None,
        face_weights: np.ndarray | None = None,
    ) -> None:
        if init_points is not None and residuals is not None:
            raise ValueError("give init_points or residuals, not both")
        if face_weights is not None and len(face_weights) != len(samples):
            raise ValueError(f"face_weights: {len(face_weights)} for {len(samples)} samples")
        self.face_weights = face_weights
        self.residuals = residuals
        self.samples = samples
        self.indices = np.asarray(indices)
        self.scheme = scheme
        self.size = size
        self.rule = rule
        self.norm = norm
        self.augment = augment
        self.seed = seed
        self.init_points = init_points
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, pos: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from train.data.augment import make_crop_flip

        i = int(self.indices[pos])
        rng = np.random.default_rng((self.seed, self.epoch, pos))
        init = None if self.init_points is None else self.init_points[i]
        sample = self.samples[i]
        if self.residuals is not None:
            init = self.residuals.init_points(np.asarray(sample.points, dtype=np.float64), rng)
        # the crop rule is defined on the TIGHT landmark box (model_store contract); some datasets
        # (AFLW-Full) carry their annotated face box in Sample.box, which is only for the NME normaliser
        sample = dataclasses.replace(sample, box=tight_box(sample.points).astype(np.float32))
        crop, pts, flipped = make_crop_flip(
            sample, self.scheme, self.size, self.rule, rng, self.augment, init_points=init
        )  # (S, S, 3) 0..255, (K, 2) crop px
        weights = sample.meta.get("point_weights")
        w = (
            np.ones(self.scheme.num_points, dtype=np.float32)
            if weights is None
            else np.asarray(weights, dtype=np.float32).reshape(self.scheme.num_points)
        )
        if flipped:
            w = w[self.scheme.flip_permutation]
        if self.face_weights is not None:
            w = w * np.float32(self.face_weights[i])
        x = torch.from_numpy(to_input(crop[None], self.norm)[0])  # (3, S, S)
        y = torch.from_numpy((np.asarray(pts, dtype=np.float32) / self.size).reshape(-1))  # (2K,)
        return x, y, torch.from_numpy(np.ascontiguousarray(w))  # (K,)


@dataclass
class EvalCrops:
    """Deterministic crops of an evaluation set for one stage, plus what maps results back.

    crops ``[N, S, S, 3]`` float32; matrices ``[N, 2, 3]`` image -> crop; gt ``[N, K, 2]`` image px;
    normaliser ``[N]``; meta: one dict per sample.
    """

    crops: np.ndarray
    matrices: np.ndarray
    gt: np.ndarray
    normaliser: np.ndarray
    meta: list[dict[str, Any]]

    def to_image(self, crop_points: np.ndarray) -> np.ndarray:
        """``[N, K, 2]`` crop px -> image px."""
        return apply_affine(invert_affine(self.matrices), crop_points)


def make_eval_crops(
    samples: Sequence[Sample],
    scheme: Scheme,
    size: int,
    rule: CropRule,
    *,
    stage_index: int = 0,
    previous: np.ndarray | None = None,
) -> EvalCrops:
    """Stage-1 crops from the client box (``train.data.types.client_boxes``: the tight landmark box
    unless a sample names another), or later-stage crops
    re-aligned from ``previous [N, K, 2]`` image-space predictions, exactly as the service does."""
    gt = np.stack([s.points for s in samples]).astype(np.float64)  # (N, K, 2)
    mats = stage_matrices(stage_index, rule, size, scheme, boxes=client_boxes(samples), previous=previous)
    crops = np.stack([window_crop(s.image, m, size) for s, m in zip(samples, mats, strict=True)])
    boxes = np.stack([np.asarray(s.box, dtype=np.float64) for s in samples])
    norm = np.asarray(scheme.normaliser_distance(gt, boxes), dtype=np.float64)
    return EvalCrops(crops.astype(np.float32), mats, gt, norm, [dict(s.meta) for s in samples])
