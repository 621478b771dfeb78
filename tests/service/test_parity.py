"""The three users of the runtime agree: the HTTP service, ``wingmark predict`` (in-process) and the
evaluation path (``train.export.evaluate``), on the default model and real photographs.

All three run ``runtime.Landmarker``; this test holds them to it. The service answers through the
real app (in-process ASGI client, default settings but the detector: ONNX Runtime, the default models,
dlib HOG, whose faces start upright as the evaluation path's do; the default detector, which seeds
stage 1 turned by BlazeFace's eyes, is held to service = ``wingmark predict`` on its own);
``wingmark predict`` is run as its ``main``; the evaluation path is ``Landmarker.landmarks`` on the
tight boxes (the boxes after the manifest's calibration), the call ``evaluate_landmarker`` makes,
and ``evaluate_landmarker`` itself must score the service's answer at NME 0. Responses round to
0.01 px, so the three agree to 0.006 px.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from model_store.store import DEFAULT_MODELS, ModelStore, default_root
from runtime import Landmarker, decode_image
from service.app import create_app
from service.settings import Settings
from tests.service.photos import FRONTAL

ROUNDING = 0.006  # the response's 0.01 px rounding, plus float noise
PHOTOS = FRONTAL[:2]  # audrey.jpg (540x720), cage.jpg (817x1024)


@pytest.fixture(autouse=True)
def _float_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Service and wingmark predict (settings from WINGMARK_*) run the float model, as the evaluation
    path does (on a VNNI CPU they would run its int8 variant by default)."""
    monkeypatch.setenv("WINGMARK_PRECISION", "float")


@pytest.fixture()
def _dlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINGMARK_DETECTOR", "dlib_hog")


async def _served(
    data: bytes, boxes: list[list[float]] | None, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    app = create_app(Settings(), load_in_background=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://wingmark.test", timeout=60) as c:
            query = ({"boxes": json.dumps(boxes)} if boxes else {}) | (params or {})
            r = await c.post(
                "/v1/landmarks", content=data, headers={"content-type": "image/jpeg"}, params=query
            )
            assert r.status_code == 200, r.text
            models = (await c.get("/v1/models")).json()
            return dict(r.json()) | {"refine_setting": models["refine"], "views_setting": models["views"]}


def _predicted(
    path: Path, box: list[float] | None, capsys: pytest.CaptureFixture[str], *more: str
) -> dict[str, Any]:
    from tools.predict import main

    capsys.readouterr()
    args = [str(path), "--json", *more] + (["--box", ",".join(f"{v:.2f}" for v in box)] if box else [])
    assert main(args) == 0
    printed = capsys.readouterr().out
    return dict(json.loads(printed[: printed.rindex("}") + 1]))


@pytest.fixture(scope="module")
def landmarker() -> Landmarker:
    """The evaluation path's view of the default model: ONNX Runtime, no detector."""
    return Landmarker.from_store(DEFAULT_MODELS["ibug68"], store=ModelStore(default_root()), detector=None)


@pytest.mark.parametrize("name", PHOTOS)
def test_service_and_predict_agree_with_the_default_detector(
    name: str, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (photos / name).read_bytes()
    served = asyncio.run(_served(data, None))
    predicted = _predicted(photos / name, None, capsys)
    assert served["box_source"] == predicted["box_source"] == Settings().detector
    assert len(served["faces"]) == len(predicted["faces"]) == 1, (served["faces"], predicted["faces"])
    s_face, p_face = served["faces"][0], predicted["faces"][0]
    np.testing.assert_allclose(s_face["box"], p_face["box"], atol=ROUNDING)
    np.testing.assert_allclose(s_face["landmarks"], p_face["landmarks"], atol=ROUNDING)
    assert served["image"]["decoded_scale"] == pytest.approx(1.0)  # small photos: decoded whole


@pytest.mark.usefixtures("_dlib")
@pytest.mark.parametrize("name", PHOTOS)
def test_service_predict_and_evaluation_agree_on_a_real_photo(
    name: str, photos: Path, landmarker: Landmarker, capsys: pytest.CaptureFixture[str]
) -> None:
    from train.data.types import Sample
    from train.export.evaluate import evaluate_landmarker

    path = photos / name
    data = path.read_bytes()
    image = decode_image(data, max_pixels=40_000_000, max_side=2048)

    # 1. the detector's boxes: service and wingmark predict (both with dlib HOG)
    served = asyncio.run(_served(data, None))
    predicted = _predicted(path, None, capsys)
    assert served["box_source"] == predicted["box_source"] == "dlib_hog"
    assert served["model"] == predicted["model"]
    assert served["model"]["name"] == DEFAULT_MODELS["ibug68"]
    assert len(served["faces"]) == len(predicted["faces"]) == 1, (served["faces"], predicted["faces"])
    s_face, p_face = served["faces"][0], predicted["faces"][0]
    np.testing.assert_allclose(s_face["box"], p_face["box"], atol=ROUNDING)
    assert s_face["detection_score"] == pytest.approx(p_face["detection_score"], abs=1e-9)
    served_pts = np.asarray(s_face["landmarks"])
    np.testing.assert_allclose(served_pts, np.asarray(p_face["landmarks"]), atol=ROUNDING)

    # ... and the evaluation path on the same detector box, calibrated as the manifest says, then
    # (the default refine="detector") once more from the tight box of the first pass's points
    box = np.asarray(s_face["box"])[None]
    tight = landmarker.calibration("dlib_hog").apply(box)
    first = landmarker.landmarks([image.pixels], tight)[-1]
    again = Landmarker.refine_boxes(first)
    stage1, final = landmarker.landmarks([image.pixels], again)
    np.testing.assert_allclose(served_pts, final[0], atol=ROUNDING)
    assert np.abs(served_pts - first[0]).max() > ROUNDING  # the second pass ran
    assert np.abs(served_pts - stage1[0]).mean() > 0.3  # stage 2 ran: the answers are the cascade's
    sample = Sample(image=image.pixels, points=served_pts.astype(np.float32), box=box[0], scheme="ibug68")
    report = evaluate_landmarker(landmarker, [sample], boxes=again)
    assert report["final"]["nme"] < 1e-4, report["final"]  # the service's answer, scored: NME 0

    # 2. a client box (the "client" calibration): the same three
    client_box = [round(v, 2) for v in (box[0] + [-12.0, -20.0, 15.0, 10.0]).tolist()]
    served = asyncio.run(_served(data, [client_box]))
    predicted = _predicted(path, client_box, capsys)
    assert served["box_source"] == predicted["box_source"] == "client"
    served_pts = np.asarray(served["faces"][0]["landmarks"])
    np.testing.assert_allclose(served_pts, np.asarray(predicted["faces"][0]["landmarks"]), atol=ROUNDING)
    # the evaluation path on the same decode: client boxes let JPEGs decode at the DCT scale the face allows
    reduce = landmarker.decode_reduction([client_box])
    reduced = decode_image(data, max_pixels=40_000_000, reduce=reduce)
    assert served["image"]["decoded_scale"] == pytest.approx(reduced.scale_x, abs=1e-5)
    found = landmarker.find_faces(reduced, np.asarray([client_box]))
    in_decoded = landmarker.landmarks([reduced.pixels], landmarker.tight_boxes(reduced, found))[-1][0]
    expected = in_decoded * [reduced.scale_x, reduced.scale_y]
    np.testing.assert_allclose(served_pts, expected, atol=ROUNDING)
    assert served["faces"][0]["detection_score"] is None


@pytest.mark.parametrize("refine", ["never", "always"])
def test_the_refine_setting_reaches_the_service(
    refine: str, photos: Path, landmarker: Landmarker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WINGMARK_REFINE: "never" gives detected faces one pass, "always" gives the client's boxes the
    second pass too; the service answers as the facade with the same setting."""
    monkeypatch.setenv("WINGMARK_REFINE", refine)
    data = (photos / PHOTOS[0]).read_bytes()
    client_box = [150.0, 200.0, 400.0, 480.0]
    facade = Landmarker(landmarker.model, landmarker.backend, None, refine=refine)
    (expected,) = facade.predict(data, [client_box])
    served = asyncio.run(_served(data, [client_box]))
    assert served["refine_setting"] == refine  # /v1/models names it
    np.testing.assert_allclose(served["faces"][0]["landmarks"], expected.landmarks, atol=ROUNDING)
    (once,) = Landmarker(landmarker.model, landmarker.backend, None, refine="never").predict(
        data, [client_box]
    )
    assert (np.abs(expected.landmarks - once.landmarks).max() > ROUNDING) == (refine == "always")


def test_the_settings_offer_the_runtimes_refine_choices_and_refuse_others() -> None:
    """WINGMARK_REFINE takes exactly runtime.landmarker.REFINE (service.settings names them without
    importing the runtime); anything else is refused when the settings load."""
    import typing

    from pydantic import ValidationError

    from runtime.landmarker import REFINE
    from service.settings import RefineKind

    assert typing.get_args(RefineKind) == REFINE
    with pytest.raises(ValidationError, match="refine"):
        Settings(refine="twice")  # type: ignore[arg-type]


def test_the_views_setting_reaches_the_service(
    photos: Path, landmarker: Landmarker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WINGMARK_VIEWS=5: the service answers as the facade with five views of the last stage, which
    differs from one view (the default) by less than a few pixels on a frontal photo."""
    monkeypatch.setenv("WINGMARK_VIEWS", "5")
    data = (photos / PHOTOS[0]).read_bytes()
    client_box = [150.0, 200.0, 400.0, 480.0]
    (expected,) = Landmarker(landmarker.model, landmarker.backend, None, refine="detector", views=5).predict(
        data, [client_box]
    )
    served = asyncio.run(_served(data, [client_box]))
    assert served["views_setting"] == 5  # /v1/models names it
    np.testing.assert_allclose(served["faces"][0]["landmarks"], expected.landmarks, atol=ROUNDING)
    (one,) = landmarker.predict(data, [client_box])
    moved = np.abs(expected.landmarks - one.landmarks).max()
    assert ROUNDING < moved < 0.05 * (client_box[2] - client_box[0]), moved


def test_the_settings_offer_the_runtimes_views_and_refuse_others() -> None:
    import typing

    from pydantic import ValidationError

    from runtime.cascade import VIEWS
    from service.settings import ViewsKind

    assert typing.get_args(ViewsKind) == VIEWS
    with pytest.raises(ValidationError, match="views"):
        Settings(views=4)  # type: ignore[arg-type]


@pytest.mark.parametrize("pipeline", ["true", "false"])
def test_a_request_asks_for_its_own_views(
    pipeline: str,
    photos: Path,
    landmarker: Landmarker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``views=5`` on one request of a service whose setting is 1 (stage batchers or the one batcher of the
    whole cascade): the answer is the facade's with five views, the response says 5, and the next
    request without the option gets one view again; ``wingmark predict --views 5`` in-process too."""
    monkeypatch.setenv("WINGMARK_CASCADE_PIPELINE", pipeline)
    data = (photos / PHOTOS[0]).read_bytes()
    client_box = [150.0, 200.0, 400.0, 480.0]
    (five,) = landmarker.predict(data, [client_box], views=5)
    (one,) = landmarker.predict(data, [client_box])
    assert np.abs(five.landmarks - one.landmarks).max() > ROUNDING  # the option can be seen
    served = asyncio.run(_served(data, [client_box], {"views": "5"}))
    assert served["views"] == 5 and served["views_setting"] == 1
    np.testing.assert_allclose(served["faces"][0]["landmarks"], five.landmarks, atol=ROUNDING)
    served = asyncio.run(_served(data, [client_box]))
    assert served["views"] == 1
    np.testing.assert_allclose(served["faces"][0]["landmarks"], one.landmarks, atol=ROUNDING)
    predicted = _predicted(photos / PHOTOS[0], client_box, capsys, "--views", "5")
    assert predicted["views"] == 5
    np.testing.assert_allclose(predicted["faces"][0]["landmarks"], five.landmarks, atol=ROUNDING)


def test_the_settings_keep_views_within_max_views() -> None:
    from pydantic import ValidationError

    assert Settings(views="5", max_views="5").max_views == 5  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_views"):
        Settings(views=9, max_views=5)
    with pytest.raises(ValidationError, match="max_views"):
        Settings(max_views=3)  # type: ignore[arg-type]


def test_a_request_asks_for_its_own_refine(
    photos: Path, landmarker: Landmarker, capsys: pytest.CaptureFixture[str]
) -> None:
    """``refine=always`` on a client box of a service whose setting is ``detector``: the facade's answer
    with that setting, and the response says the faces were refined; without it, one pass and false;
    ``wingmark predict --refine always`` in-process too."""
    data = (photos / PHOTOS[0]).read_bytes()
    client_box = [150.0, 200.0, 400.0, 480.0]
    (again,) = landmarker.predict(data, [client_box], refine="always")
    (once,) = landmarker.predict(data, [client_box])
    assert np.abs(again.landmarks - once.landmarks).max() > ROUNDING  # the option can be seen
    served = asyncio.run(_served(data, [client_box], {"refine": "always"}))
    assert served["refined"] is True and served["refine_setting"] == "detector"
    np.testing.assert_allclose(served["faces"][0]["landmarks"], again.landmarks, atol=ROUNDING)
    served = asyncio.run(_served(data, [client_box]))
    assert served["refined"] is False
    np.testing.assert_allclose(served["faces"][0]["landmarks"], once.landmarks, atol=ROUNDING)
    predicted = _predicted(photos / PHOTOS[0], client_box, capsys, "--refine", "always")
    np.testing.assert_allclose(predicted["faces"][0]["landmarks"], again.landmarks, atol=ROUNDING)
