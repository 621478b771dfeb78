"""The caller's face boxes: what makes one valid (:func:`check_boxes`), and the error that says why not."""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.decode import DecodedImage

__all__ = ["MIN_BOX_SIDE", "InvalidBoxesError", "check_boxes"]

MIN_BOX_SIDE = 1.0  # px: a smaller box holds no face (and a sub-ULP one has no crop at all)


class InvalidBoxesError(ValueError):
    """The caller's boxes are malformed, empty or inverted, or do not fit the image."""


def check_boxes(boxes: Any, image: DecodedImage | None = None) -> np.ndarray:
    """The caller's boxes as ``[N, 4]`` float64, or InvalidBoxesError saying what is wrong.

    Each box needs finite numbers and x2 > x1, y2 > y1, each side at least ``MIN_BOX_SIDE``; with
    ``image``, it must also overlap the image and reach past its edges by no more than the image's own
    size (a face at the edge may).
    """
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidBoxesError("boxes must be a list of [x1, y1, x2, y2] numbers") from None
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidBoxesError(f"boxes must be a list of [x1, y1, x2, y2]; got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise InvalidBoxesError("box coordinates must be finite numbers")
    bad = np.nonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))[0]
    if len(bad):
        raise InvalidBoxesError(f"box {int(bad[0])} is empty or inverted (need x2 > x1, y2 > y1)")
    small = np.nonzero((arr[:, 2] - arr[:, 0] < MIN_BOX_SIDE) | (arr[:, 3] - arr[:, 1] < MIN_BOX_SIDE))[0]
    if len(small):
        raise InvalidBoxesError(f"box {int(small[0])} is under {MIN_BOX_SIDE:g} px wide or tall")
    if image is not None:
        w, h = image.width, image.height
        inside = (arr[:, 0] < w) & (arr[:, 2] > 0) & (arr[:, 1] < h) & (arr[:, 3] > 0)
        if not inside.all():
            raise InvalidBoxesError(f"box {int(np.nonzero(~inside)[0][0])} lies outside the {w}x{h} image")
        huge = (arr[:, 0] < -w) | (arr[:, 2] > 2 * w) | (arr[:, 1] < -h) | (arr[:, 3] > 2 * h)
        if huge.any():
            raise InvalidBoxesError(
                f"box {int(np.nonzero(huge)[0][0])} reaches further than the image's own size past its edges"
            )
    return arr
