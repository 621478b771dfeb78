"""A 3-D mean face shape in the iBUG 68-point layout, and the AFLW-19 points derived from it.

Shared by the synthetic renderer (``train.data.face3d``) and head-pose estimation
(:mod:`model_store.pose`), so it lives here, with no torch and no scipy.

Source: ``insightface/data/objects/meanshape_68.pkl`` from the ``insightface`` 2.1 wheel on PyPI
(https://github.com/deepinsight/insightface, MIT licence), 68 x 3 float32, rounded to 4 decimals.
Axes: x to the image's right (the subject's left), y down, z towards the camera; the face spans
about -0.63..0.63 in x (jaw points 0 and 16) and the nose tip (point 30) is the most forward point.
"""

from __future__ import annotations

import numpy as np

__all__ = ["AFLW19_FROM_68", "MEAN_SHAPE_19", "MEAN_SHAPE_68", "aflw19_from_68"]

_ROWS: tuple[tuple[float, float, float], ...] = (
    (-0.6267, -0.2927, -0.3140),
    (-0.5997, -0.1225, -0.2924),
    (-0.5710, 0.0512, -0.2549),
    (-0.5339, 0.2128, -0.1866),
    (-0.4797, 0.3506, -0.0477),
    (-0.3958, 0.4465, 0.0733),
    (-0.2988, 0.5107, 0.1798),
    (-0.1884, 0.5544, 0.3167),
    (0.0015, 0.5844, 0.3884),
    (0.1910, 0.5517, 0.3143),
    (0.3269, 0.4896, 0.1684),
    (0.4400, 0.4024, 0.0360),
    (0.5069, 0.3116, -0.0948),
    (0.5409, 0.2045, -0.2027),
    (0.5741, 0.0457, -0.2842),
    (0.5991, -0.1459, -0.2965),
    (0.6275, -0.3077, -0.3020),
    (-0.4747, -0.4376, 0.2365),
    (-0.4167, -0.4718, 0.3160),
    (-0.3475, -0.4841, 0.3661),
    (-0.2606, -0.4764, 0.3992),
    (-0.1671, -0.4578, 0.4166),
    (0.1232, -0.4587, 0.4251),
    (0.2064, -0.4804, 0.4158),
    (0.2867, -0.4901, 0.3920),
    (0.3624, -0.4769, 0.3528),
    (0.4256, -0.4501, 0.2953),
    (-0.0076, -0.3231, 0.4619),
    (-0.0079, -0.2557, 0.5105),
    (-0.0077, -0.1992, 0.5525),
    (-0.0073, -0.1426, 0.5987),
    (-0.1450, 0.0331, 0.4197),
    (-0.0843, 0.0313, 0.4732),
    (-0.0055, 0.0398, 0.5147),
    (0.0635, 0.0461, 0.4792),
    (0.1340, 0.0220, 0.4191),
    (-0.3868, -0.3134, 0.2596),
    (-0.3167, -0.3501, 0.3285),
    (-0.2341, -0.3549, 0.3335),
    (-0.1552, -0.3152, 0.3143),
    (-0.2309, -0.2843, 0.3256),
    (-0.3175, -0.2852, 0.3099),
    (0.1390, -0.3098, 0.3183),
    (0.2195, -0.3532, 0.3380),
    (0.3017, -0.3497, 0.3331),
    (0.3767, -0.3135, 0.2632),
    (0.2967, -0.2871, 0.3220),
    (0.2146, -0.2905, 0.3312),
    (-0.2014, 0.2374, 0.3795),
    (-0.1373, 0.1858, 0.4653),
    (-0.0765, 0.1512, 0.5036),
    (-0.0025, 0.1687, 0.5164),
    (0.0644, 0.1509, 0.5045),
    (0.1265, 0.1795, 0.4686),
    (0.2182, 0.2390, 0.3757),
    (0.1329, 0.2839, 0.4401),
    (0.0680, 0.2974, 0.4774),
    (-0.0005, 0.3000, 0.4871),
    (-0.0693, 0.2970, 0.4805),
    (-0.1425, 0.2743, 0.4381),
    (-0.1781, 0.2306, 0.3964),
    (-0.0740, 0.2147, 0.4653),
    (-0.0026, 0.2141, 0.4832),
    (0.0598, 0.2108, 0.4722),
    (0.1669, 0.2313, 0.3968),
    (0.0598, 0.2238, 0.4664),
    (-0.0014, 0.2258, 0.4752),
    (-0.0752, 0.2307, 0.4671),
)

MEAN_SHAPE_68: np.ndarray = np.array(_ROWS, dtype=np.float64)
MEAN_SHAPE_68.setflags(write=False)

# The 19 AFLW points from the 68-point model (aflw19 order in model_store.schemes). Each row lists the
# 68-point indices whose 3-D mean is the AFLW point: brows 17, 19, 21 / 22, 24, 26; eye corners 36, 39 /
# 42, 45 with the eye centre the mean of the eye contour; nose wings 31, 35 and tip 30; mouth corners
# 48, 54 with the mouth centre between the inner lips (62, 66); chin 8.
AFLW19_FROM_68: tuple[tuple[int, ...], ...] = (
    (17,), (19,), (21,), (22,), (24,), (26,),
    (36,), tuple(range(36, 42)), (39,), (42,), tuple(range(42, 48)), (45,),
    (31,), (30,), (35,),
    (48,), (62, 66), (54,),
    (8,),
)  # fmt: skip


def aflw19_from_68(points68: np.ndarray) -> np.ndarray:
    """[..., 68, D] -> [..., 19, D]: the AFLW-19 points as means of 68-point groups (in 3-D)."""
    p = np.asarray(points68, dtype=np.float64)
    return np.stack([p[..., list(idx), :].mean(axis=-2) for idx in AFLW19_FROM_68], axis=-2)


MEAN_SHAPE_19: np.ndarray = aflw19_from_68(MEAN_SHAPE_68)
MEAN_SHAPE_19.setflags(write=False)
