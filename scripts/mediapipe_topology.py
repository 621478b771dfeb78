"""Derive MediaPipe Face Mesh's triangles from the edge list its wheel ships, and write them as
``train/data/mediapipe_face_topology.json`` (used by ``train.data.repose``).

Run once with the MediaPipe venv of the real-face cache (the only place ``mediapipe`` is installed)::

    cache/real/mp-venv/bin/python -I scripts/mediapipe_topology.py train/data/mediapipe_face_topology.json

Source: ``mediapipe.python.solutions.face_mesh_connections`` of the ``mediapipe`` wheel (0.10.21),
Copyright 2021 The MediaPipe Authors, Apache License 2.0. Only the connectivity (vertex indices) is
taken; the derivation below is wingmark's own.

1. ``FACEMESH_TESSELATION`` is the set of edges of the canonical mesh's triangles, without the ones that
   close the eyes and the mouth. Its triangles are the 3-cycles of that graph, except 3-cycles all of
   whose edges lie on three or more 3-cycles (two spurious ones, around the nostrils).
2. Those triangles leave four boundary loops: the face oval (``FACEMESH_FACE_OVAL``), both eye openings
   and the inner lip line. The three inner loops are closed by zipping the upper and lower chain
   between the loop's two corners (the eye and mouth corners named below).
3. All triangles are wound consistently (neighbours traverse a shared edge in opposite directions).
   The overall sign depends on the face's frame; ``train.data.repose`` orients it per face.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path
from typing import Any

from mediapipe.python.solutions import face_mesh_connections as fmc

# corners of the loops to close (MediaPipe vertex indices): eye corners and inner mouth corners
CORNERS = {"right_eye": (33, 133), "left_eye": (362, 263), "mouth": (78, 308)}


Tri = tuple[int, int, int]


def _edges(t: Tri) -> list[tuple[int, int]]:
    a, b, c = t
    return [(min(u, v), max(u, v)) for u, v in ((a, b), (b, c), (a, c))]


def _loops(edges: list[tuple[int, int]]) -> list[list[int]]:
    adj: dict[int, list[int]] = collections.defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    seen: set[int] = set()
    loops = []
    for start in sorted(adj):
        if start in seen:
            continue
        loop, prev, cur = [start], -1, start
        seen.add(start)
        while True:
            nxt = [v for v in adj[cur] if v != prev and v not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            loop.append(cur)
            seen.add(cur)
        loops.append(loop)
    return loops


def _zip(loop: list[int], a: int, b: int) -> list[tuple[int, int, int]]:
    """Triangles closing a loop: walk its two chains from corner a to corner b side by side."""
    i, j = loop.index(a), loop.index(b)
    n = len(loop)
    one = [loop[(i + k) % n] for k in range((j - i) % n + 1)]  # a .. b one way
    two = [loop[(i - k) % n] for k in range((i - j) % n + 1)]  # a .. b the other way
    tris = []
    p, q = 0, 0  # positions on one and two; both start at a
    while p < len(one) - 1 or q < len(two) - 1:
        # advance the chain that is behind (by fraction of its length), as a zipper does
        if q >= len(two) - 1 or (p < len(one) - 1 and (p + 1) / (len(one) - 1) <= (q + 1) / (len(two) - 1)):
            tri = (one[p], one[p + 1], two[q])
            p += 1
        else:
            tri = (one[p], two[q + 1], two[q])
            q += 1
        if len(set(tri)) == 3:
            tris.append(tri)
    return tris


def _orient(tris: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Consistent winding by breadth-first search over edge neighbours."""
    by_edge: dict[tuple[int, int], list[int]] = collections.defaultdict(list)
    for k, t in enumerate(tris):
        for e in _edges(t):
            by_edge[e].append(k)
    out: list[tuple[int, int, int] | None] = [None] * len(tris)
    for seed in range(len(tris)):
        if out[seed] is not None:
            continue
        out[seed] = tris[seed]
        queue = collections.deque([seed])
        while queue:
            k = queue.popleft()
            cur = out[k]
            if cur is None:
                continue
            directed = {(cur[0], cur[1]), (cur[1], cur[2]), (cur[2], cur[0])}
            for e in _edges(cur):
                for m in by_edge[e]:
                    if out[m] is not None:
                        continue
                    a, b, c = tris[m]
                    mine = {(a, b), (b, c), (c, a)}
                    out[m] = (a, c, b) if mine & directed else (a, b, c)
                    queue.append(m)
    return [t for t in out if t is not None]


def derive() -> dict[str, Any]:
    edges = {(min(e), max(e)) for e in fmc.FACEMESH_TESSELATION}
    adj: dict[int, set[int]] = collections.defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    cycles: set[Tri] = set()
    for a, b in edges:
        for x in adj[a] & adj[b]:
            u, v, w = sorted((a, b, x))
            cycles.add((u, v, w))
    count = collections.Counter(e for t in cycles for e in _edges(t))
    tris = sorted(t for t in cycles if not all(count[e] >= 3 for e in _edges(t)))
    count = collections.Counter(e for t in tris for e in _edges(t))
    loops = _loops(sorted(e for e, n in count.items() if n == 1))
    oval_vertices = {v for e in fmc.FACEMESH_FACE_OVAL for v in e}
    oval = next(loop for loop in loops if set(loop) == oval_vertices)
    closing: dict[str, list[list[int]]] = {}
    for name, (a, b) in CORNERS.items():
        loop = next(loop for loop in loops if a in loop and b in loop)
        closing[name] = [list(t) for t in _zip(loop, a, b)]
        tris += [(t[0], t[1], t[2]) for t in closing[name]]
    tris = _orient(tris)
    count = collections.Counter(e for t in tris for e in _edges(t))
    if max(count.values()) > 2 or sorted(v for e, n in count.items() if n == 1 for v in e) != sorted(
        v for v in oval for _ in range(2)
    ):
        raise RuntimeError("the derived mesh is not a disc bounded by the face oval")
    return {
        "source": "mediapipe 0.10.21 wheel, mediapipe/python/solutions/face_mesh_connections.py "
        "(FACEMESH_TESSELATION, FACEMESH_FACE_OVAL); derived by scripts/mediapipe_topology.py",
        "licence": "Apache-2.0 (Copyright 2021 The MediaPipe Authors)",
        "num_vertices": 468,
        "closed": {name: len(t) for name, t in closing.items()},
        "oval": oval,
        "triangles": [list(t) for t in tris],
    }


if __name__ == "__main__":
    out = derive()
    lines = [f" {json.dumps(k)}: {json.dumps(v)}" for k, v in out.items() if k != "triangles"]
    tris = ",\n".join(f"  {json.dumps(t)}" for t in out["triangles"])
    text = "{\n" + ",\n".join(lines) + ',\n "triangles": [\n' + tris + "\n ]\n}\n"
    Path(sys.argv[1]).write_text(text)
    print(f"{len(out['triangles'])} triangles -> {sys.argv[1]}")
