"""Pose-based data balancing (PDB; Feng et al., CVPR 2018, Sec. 4.3).

Training shapes are aligned by generalised Procrustes analysis (translation, scale and rotation
removed), PCA is applied to the aligned shapes, and each shape is projected onto the first
principal component, which on in-the-wild data mostly encodes yaw. The projections are binned into
K equal-width bins, and samples of sparse bins are duplicated until every non-empty bin holds as
many samples as the fullest one. Duplicates are just repeated indices: each copy is augmented
differently when it is drawn.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pdb_indices", "pose_histogram", "pose_projection", "procrustes_align"]


def _normalise(shapes: np.ndarray) -> np.ndarray:
    """[N, K, 2] -> centred shapes of unit Frobenius norm."""
    c = shapes - shapes.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(c.reshape(len(c), -1), axis=1)
    return np.asarray(c / np.maximum(norm, 1e-12)[:, None, None])


def procrustes_align(shapes: np.ndarray, iterations: int = 5) -> np.ndarray:
    """Generalised Procrustes alignment.

    Args:
        shapes: [N, K, 2] landmark sets.
    Returns:
        [N, K, 2] float64: every shape centred, scaled to unit norm and rotated (no reflection) onto
        the iteratively re-estimated mean shape.
    """
    x = np.asarray(shapes, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 2:
        raise ValueError(f"expected shapes [N, K, 2], got {x.shape}")
    x = _normalise(x)
    if len(x) == 0:
        return x
    ref = x[0]
    for _ in range(iterations):
        # Optimal rotation of each shape onto ref: SVD of the 2x2 cross-covariance, reflections excluded.
        h = np.einsum("nki,kj->nij", x, ref)  # [N, 2, 2]
        u, _, vt = np.linalg.svd(h)
        d = np.sign(np.linalg.det(u @ vt))
        fix = np.ones((len(x), 2))
        fix[:, 1] = d
        r = (u * fix[:, None, :]) @ vt  # [N, 2, 2], applied as x @ r
        x = np.einsum("nki,nij->nkj", x, r)
        new_ref = x.mean(axis=0)
        new_ref = (new_ref - new_ref.mean(axis=0)) / max(float(np.linalg.norm(new_ref)), 1e-12)
        if np.allclose(new_ref, ref, atol=1e-9):
            break
        ref = new_ref
    return x


def pose_projection(shapes: np.ndarray) -> np.ndarray:
    """Scores on the first principal component of the Procrustes-aligned shapes.

    Args:
        shapes: [N, K, 2].
    Returns:
        [N] float64 projections (mean zero). The sign is fixed so that the loading with the largest
        magnitude is positive, which makes the result deterministic for a given set.
    """
    aligned = procrustes_align(shapes)
    flat = aligned.reshape(len(aligned), -1)
    centred = flat - flat.mean(axis=0)
    pc = _first_component(centred.T @ centred)
    if pc[np.argmax(np.abs(pc))] < 0:
        pc = -pc
    return np.asarray(centred @ pc)


def _first_component(gram: np.ndarray, iterations: int = 2000, tol: float = 1e-12) -> np.ndarray:
    """Unit eigenvector of the largest eigenvalue of a symmetric PSD [D, D] matrix.

    Power iteration (matrix-vector products only): LAPACK's threaded SVD/eigh can be orders of
    magnitude slower on an oversubscribed machine; falls back to ``eigh`` if it does not converge.
    """
    d = gram.shape[0]
    v = np.full(d, 1.0 / np.sqrt(d)) + np.linspace(0.0, 1e-3, d)
    v /= np.linalg.norm(v)
    for _ in range(iterations):
        w = gram @ v
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            break
        w /= norm
        if float(np.abs(w - v).max()) < tol or float(np.abs(w + v).max()) < tol:
            return w
        v = w
    return np.asarray(np.linalg.eigh(gram)[1][:, -1])


def pose_histogram(projection: np.ndarray, num_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """[N] projections -> (bin index [N] in 0..num_bins-1, counts [num_bins]); equal-width bins."""
    p = np.asarray(projection, dtype=np.float64)
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    lo, hi = float(p.min()), float(p.max())
    if hi <= lo:
        bins = np.zeros(len(p), dtype=np.int64)
    else:
        bins = np.clip(((p - lo) / (hi - lo) * num_bins).astype(np.int64), 0, num_bins - 1)
    return bins, np.bincount(bins, minlength=num_bins)


def pdb_indices(
    shapes: np.ndarray, num_bins: int, rng: np.random.Generator, *, max_factor: float | None = None
) -> np.ndarray:
    """Balanced sample indices.

    Args:
        shapes: [N, K, 2] training shapes.
        num_bins: K, the number of histogram bins of the first-PC projection.
        rng: draws which samples of a sparse bin are duplicated.
        max_factor: optional cap: a bin grows to at most ``max_factor`` times its own size.
    Returns:
        [M] int64 indices into the N samples, M >= N: every index once, plus duplicates (sampled
        without replacement within a bin as far as possible) until each non-empty bin reaches the
        count of the fullest bin; shuffled.
    """
    n = len(shapes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    bins, counts = pose_histogram(pose_projection(shapes), num_bins)
    target = int(counts.max())
    out = [np.arange(n, dtype=np.int64)]
    for b in np.nonzero(counts)[0]:
        members = np.nonzero(bins == b)[0]
        want = target - len(members)
        if max_factor is not None:
            want = min(want, int(len(members) * (max_factor - 1)))
        if want <= 0:
            continue
        full, rest = divmod(want, len(members))
        extra = [np.tile(members, full), rng.choice(members, size=rest, replace=False)]
        out.extend(extra)
    idx = np.concatenate(out)
    return np.asarray(rng.permutation(idx), dtype=np.int64)
