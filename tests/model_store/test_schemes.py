from __future__ import annotations

import numpy as np
import pytest

from model_store.schemes import AFLW19, IBUG68, SCHEMES, get_scheme


@pytest.mark.parametrize("scheme", list(SCHEMES.values()), ids=list(SCHEMES))
def test_flip_permutation_is_an_involution(scheme):
    perm = scheme.flip_permutation
    assert sorted(perm.tolist()) == list(range(scheme.num_points))
    np.testing.assert_array_equal(perm[perm], np.arange(scheme.num_points))


@pytest.mark.parametrize("scheme", list(SCHEMES.values()), ids=list(SCHEMES))
def test_flip_maps_each_side_to_its_twin(scheme):
    assert len(set(scheme.names)) == scheme.num_points
    for i, name in enumerate(scheme.names):
        twin = scheme.names[scheme.flip_permutation[i]]
        if "left" in name:
            assert twin == name.replace("left", "right"), (name, twin)
        elif "right" in name:
            assert twin == name.replace("right", "left"), (name, twin)
        else:
            assert twin == name, f"midline point {name} must map to itself"


def test_ibug68_layout_matches_the_design():
    assert IBUG68.num_points == 68
    assert IBUG68.names[8] == "chin"
    assert IBUG68.names[36] == "right_eye_outer" and IBUG68.names[45] == "left_eye_outer"
    assert IBUG68.normaliser_indices == (36, 45)
    assert IBUG68.right_eye == tuple(range(36, 42))
    assert IBUG68.flip_permutation[0] == 16 and IBUG68.flip_permutation[30] == 30


def test_aflw19_has_no_ears_and_box_normaliser():
    assert AFLW19.num_points == 19
    assert not any("ear" in n.split("_") for n in AFLW19.names)
    assert AFLW19.normaliser == "box_size"


def test_inter_ocular_normaliser():
    pts = np.zeros((2, 68, 2))
    pts[0, 36], pts[0, 45] = (10, 20), (40, 60)  # 3-4-5 triangle: 50
    pts[1, 36], pts[1, 45] = (0, 0), (7, 0)
    np.testing.assert_allclose(IBUG68.normaliser_distance(pts), [50.0, 7.0])


def test_box_normaliser_needs_boxes():
    pts = np.zeros((1, 19, 2))
    with pytest.raises(ValueError, match="box"):
        AFLW19.normaliser_distance(pts)
    np.testing.assert_allclose(AFLW19.normaliser_distance(pts, np.array([[0, 0, 4, 9]])), [6.0])


def test_normaliser_refuses_the_wrong_number_of_points():
    with pytest.raises(ValueError, match="68"):
        IBUG68.normaliser_distance(np.zeros((1, 19, 2)))


def test_get_scheme():
    assert get_scheme("aflw19") is AFLW19
    with pytest.raises(ValueError, match="known"):
        get_scheme("wflw98x")
