"""Request parsing of POST /v1/landmarks, in-process (real app, real ONNX Runtime, real Pillow): every
malformed input gets a 4xx problem+json answer, never a 5xx; a property-based test (hypothesis) sends
arbitrary bodies, content types, form fields, JSON documents and query strings and asserts the same."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.settings import Settings
from tests.service.images import bomb_png, encode

PNG = encode(np.asarray(np.random.default_rng(1).integers(0, 255, (48, 48, 3)), np.uint8), "PNG")
B64 = base64.b64encode(PNG).decode()
TIFF = encode(np.zeros((16, 16, 3), np.uint8), "TIFF")
DEEP = "[" * 100_000 + "]" * 100_000
PROBLEM_PREFIX = "urn:wingmark:problem:"


@pytest.fixture(scope="module")
def client(test_store: Path) -> Iterator[TestClient]:
    s = Settings(model_root=test_store, models=["test-ibug68"], detector="none", max_request_bytes=2_000_000)
    with TestClient(create_app(s, load_in_background=False), raise_server_exceptions=False) as c:
        yield c


def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_PREFIX + slug, body
    return body


def json_post(client: TestClient, text: str, **kw: Any) -> Any:
    return client.post(
        "/v1/landmarks", content=text.encode(), headers={"content-type": "application/json"}, **kw
    )


def tiff_with_next_ifd(pointer: int) -> bytes:
    """A valid one-frame TIFF whose next-IFD pointer is ``pointer`` (garbage: past the file's end)."""
    data = bytearray(TIFF)
    ifd = struct.unpack_from("<I", data, 4)[0]
    entries = struct.unpack_from("<H", data, ifd)[0]
    struct.pack_into("<I", data, ifd + 2 + 12 * entries, pointer)
    return bytes(data)


# -- each malformed input found by the adversarial test (issue 20, item 4) and the smaller items (9) -----
def test_a_multipart_text_field_beyond_latin1_is_not_an_image(client: TestClient) -> None:
    r = client.post("/v1/landmarks", files={"image": (None, "€".encode())}, params={"box": "1,1,20,20"})
    problem(r, 400, "invalid-image")


def test_a_binary_image_sent_as_a_multipart_text_field_still_decodes(client: TestClient) -> None:
    r = client.post("/v1/landmarks", files={"image": (None, PNG)}, params={"box": "1,1,40,40"})
    assert r.status_code == 200, r.text
    assert len(r.json()["faces"]) == 1


@pytest.mark.parametrize("how", ["json", "form", "query"], ids=["json-boxes", "form-boxes", "query-boxes"])
def test_a_400_digit_box_coordinate_is_a_400(client: TestClient, how: str) -> None:
    huge = "9" * 400
    if how == "json":
        r = json_post(client, f'{{"image": "{B64}", "boxes": [[{huge}, 1, 2, 3]]}}')
    elif how == "form":
        r = client.post(
            "/v1/landmarks", files={"image": ("a.png", PNG)}, data={"boxes": f"[[1, 1, {huge}, 9]]"}
        )
    else:
        r = client.post("/v1/landmarks", content=PNG, params={"box": f"1,1,{huge},9"})
    problem(r, 400, "invalid-boxes")


@pytest.mark.parametrize("where", ["body", "form", "query"])
def test_json_nested_100000_deep_is_a_400(client: TestClient, where: str) -> None:
    if where == "body":
        r = json_post(client, f'{{"image": "{B64}", "boxes": {DEEP}}}')
        problem(r, 400, "invalid-request")
    elif where == "form":
        r = client.post("/v1/landmarks", files={"image": ("a.png", PNG)}, data={"boxes": DEEP})
        problem(r, 400, "invalid-boxes")
    else:  # a query string this long is refused by real HTTP servers; the parser must still cope
        r = client.post("/v1/landmarks", content=PNG, params={"boxes": "[" * 3000 + "]" * 3000})
        problem(r, 400, "invalid-boxes")


@pytest.mark.parametrize(
    "key, value",
    [("max_faces", "Infinity"), ("max_faces", "1e400"), ("max_faces", "-Infinity"), ("max_faces", "NaN"),
     ("deadline_ms", "9" * 400), ("deadline_ms", "1e400"), ("deadline_ms", "NaN"), ("max_faces", "9" * 400),
     ("max_faces", "[1]"), ("deadline_ms", '{"a": 1}')],
)  # fmt: skip
def test_json_numbers_that_overflow_are_422(client: TestClient, key: str, value: str) -> None:
    r = json_post(client, f'{{"image": "{B64}", "boxes": [[1, 1, 40, 40]], "{key}": {value}}}')
    problem(r, 422, "invalid-parameters")


@pytest.mark.parametrize("box", ["10,10,10.000000000000002,10.000000000000002", "10,10,10.5,30", "5,5,5,5"])
def test_a_box_under_a_pixel_is_a_400(client: TestClient, box: str) -> None:
    problem(client.post("/v1/landmarks", content=PNG, params={"box": box}), 400, "invalid-boxes")


@pytest.mark.parametrize(
    "boxes", ["[[]]", "[[1, 2, 3]]", "[[1, 2, 3, 4, 5]]", "[[1, 2, 30, 40], []]", "[[true, 1, 20, 20]]"]
)
def test_boxes_without_four_numbers_are_a_400(client: TestClient, boxes: str) -> None:
    problem(client.post("/v1/landmarks", content=PNG, params={"boxes": boxes}), 400, "invalid-boxes")


@pytest.mark.parametrize("pointer", [0xDEADBEEF, 0x7FFFFFFF, 3])
def test_a_tiff_whose_next_ifd_pointer_is_garbage_never_500s(client: TestClient, pointer: int) -> None:
    r = client.post("/v1/landmarks", content=tiff_with_next_ifd(pointer), params={"box": "1,1,15,15"})
    assert r.status_code in (200, 400), r.text  # frame 0 is intact: decoding it is fine, so is refusing
    if r.status_code == 400:
        problem(r, 400, "invalid-image")


@pytest.mark.parametrize(
    "data",
    [
        b"not an image",
        PNG[:40],
        PNG[:8] + bytes(200),
        b"\xff\xd8\xff" + bytes(100),
        encode(np.zeros((8, 8, 3), np.uint8), "ICO"),
    ],
    ids=["text", "truncated-png", "zeroed-png", "jpeg-soi-only", "ico"],
)
def test_an_undecodable_image_is_a_4xx_not_a_500(client: TestClient, data: bytes) -> None:
    r = client.post("/v1/landmarks", content=data, params={"box": "1,1,6,6"})
    assert r.status_code in (400, 415), r.text
    problem(r, r.status_code, "invalid-image" if r.status_code == 400 else "unsupported-media-type")


def test_the_bodys_boxes_win_over_the_querys(client: TestClient) -> None:
    form = client.post(
        "/v1/landmarks", files={"image": ("a.png", PNG)}, data={"boxes": "[[2, 2, 40, 40]]"},
        params={"box": "5,5,30,30"},
    )  # fmt: skip
    assert form.status_code == 200, form.text
    assert [f["box"] for f in form.json()["faces"]] == [[2, 2, 40, 40]]
    body = json_post(
        client, json.dumps({"image": B64, "boxes": [[3, 3, 40, 40]]}), params={"box": "5,5,30,30"}
    )
    assert [f["box"] for f in body.json()["faces"]] == [[3, 3, 40, 40]]
    query = client.post("/v1/landmarks", content=PNG, params={"box": ["5,5,30,30", "6,6,30,30"]})
    assert len(query.json()["faces"]) == 2  # with no boxes in the body, every query box counts


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_decode_errors_do_not_name_pillow_internals(client: TestClient, cut: float) -> None:
    jpeg = encode(np.asarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3)), np.uint8), "JPEG")
    for broken in (PNG[: int(len(PNG) * cut)], jpeg[:300] + bytes(range(256)) * 4 + jpeg[1324:]):
        r = client.post("/v1/landmarks", content=broken, params={"box": "1,1,20,20"})
        detail = problem(r, 400, "invalid-image")["detail"]
        assert detail in {"cannot decode image: the data is truncated or corrupt", "not a recognised image"}


@pytest.mark.parametrize("side", [30_000, 5_000])  # Pillow refuses the first itself (its own, larger limit)
def test_the_413_names_the_configured_pixel_limit(test_store: Path, side: int) -> None:
    s = Settings(model_root=test_store, models=["test-ibug68"], detector="none", max_image_pixels=12_345_678)
    with TestClient(create_app(s, load_in_background=False)) as c:
        r = c.post("/v1/landmarks", content=bomb_png(side, side), params={"box": "1,1,20,20"})
    detail = problem(r, 413, "image-too-large")["detail"]
    assert "12345678" in detail and "178956970" not in detail


def test_not_ready_details_do_not_reveal_the_store_path(tmp_path: Path) -> None:
    root = tmp_path / "secret-store-location"
    root.mkdir()
    s = Settings(model_root=root, models=["nothing-here"], detector="none")
    with TestClient(create_app(s, load_in_background=False)) as c:
        for r in (c.get("/readyz"), c.post("/v1/landmarks", content=PNG, params={"box": "1,1,20,20"})):
            assert r.status_code == 503
            assert "secret-store-location" not in r.text and str(tmp_path) not in r.text, r.text
        assert "secret-store-location" not in c.get("/v1/models").text


def test_the_demo_page_forbids_framing_sniffing_and_foreign_scripts(client: TestClient) -> None:
    page = client.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    for path in ("/", "/static/app.js", "/healthz", "/v1/models"):
        assert client.get(path).headers["x-content-type-options"] == "nosniff"


def test_forwarded_headers_are_not_trusted_by_default() -> None:
    s = Settings()
    assert s.proxy_headers is False
    import uvicorn

    from service import server

    seen: dict[str, Any] = {}

    class Capture(uvicorn.Server):
        def run(self, sockets: Any = None) -> None:
            seen.update(proxy_headers=self.config.proxy_headers, allow=self.config.forwarded_allow_ips)

    original = uvicorn.Server
    uvicorn.Server = Capture  # type: ignore[misc]
    try:
        server.serve_main([])
    finally:
        uvicorn.Server = original  # type: ignore[misc]
    assert seen["proxy_headers"] is False


# -- property-based: arbitrary requests never get a 5xx ---------------------------------------------------
KEYS = [
    "image",
    "model",
    "scheme",
    "boxes",
    "max_faces",
    "deadline_ms",
    "pose",
    "views",
    "refine",
    "box",
    "other",
]
NUMBER_TEXT = st.sampled_from(
    [
        "Infinity",
        "-Infinity",
        "NaN",
        "1e400",
        "-1e400",
        "9" * 400,
        "0",
        "-0",
        "1e-400",
        "4.9e-324",
        "32",
        "1.5",
    ]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


def json_text(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


@st.composite
def json_fragment(draw: st.DrawFn) -> str:
    """A JSON value as text, including what json.dumps never writes (1e400, 400 digits, deep nesting)."""
    kind = draw(st.sampled_from(["value", "number", "deep", "box"]))
    if kind == "value":
        return json_text(draw(json_values))
    if kind == "number":
        return draw(NUMBER_TEXT)
    if kind == "deep":
        depth = draw(st.integers(1, 50_000))
        return "[" * depth + "]" * depth
    coords = draw(
        st.lists(NUMBER_TEXT | st.floats().map(json_text) | st.integers().map(str), min_size=0, max_size=5)
    )
    return "[[" + ", ".join(coords) + "]]"


@st.composite
def request_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["json", "multipart", "raw", "other"]))
    params: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(KEYS[1:]), max_size=3, unique=True)):
        params[key] = draw(
            st.text(max_size=30) | NUMBER_TEXT | json_fragment().filter(lambda t: len(t) < 2000)
        )
    image_b64 = draw(
        st.sampled_from([B64, "", "not base64!", "data:image/png;base64," + B64]) | st.text(max_size=20)
    )
    kw: dict[str, Any] = {"params": params}
    if kind == "json":
        members = [f'"image": {json_text(image_b64)}'] if draw(st.booleans()) else []
        for key in draw(st.lists(st.sampled_from(KEYS), max_size=4, unique=True)):
            members.append(f"{json_text(key)}: {draw(json_fragment())}")
        body = "{" + ", ".join(members) + "}" if draw(st.integers(0, 9)) else draw(json_fragment())
        kw.update(content=body.encode(), headers={"content-type": "application/json"})
    elif kind == "multipart":
        files: dict[str, Any] = {}
        if draw(st.booleans()):
            files["image"] = ("a.png", draw(st.sampled_from([PNG, TIFF, b"", b"GIF89a", PNG[:50]])))
        else:
            files["image"] = (None, draw(st.text(max_size=20)).encode() or PNG)
        for key in draw(st.lists(st.sampled_from(KEYS[1:]), max_size=4, unique=True)):
            files[key] = (None, draw(st.text(max_size=20) | NUMBER_TEXT | json_fragment()).encode())
        kw["files"] = files
    else:
        content_type = "image/png" if kind == "raw" else draw(st.text(max_size=30).filter(str.isprintable))
        body_bytes = draw(st.sampled_from([PNG, TIFF, tiff_with_next_ifd(0xDEADBEEF), b"", b"\xff\xd8\xff"]))
        kw.update(
            content=body_bytes, headers={"content-type": content_type.encode("ascii", "ignore").decode()}
        )
    return kw


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(kw=request_kwargs())
def test_no_request_gets_a_5xx(client: TestClient, kw: dict[str, Any]) -> None:
    r = client.post("/v1/landmarks", **kw)
    assert r.status_code < 500, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["type"].startswith(PROBLEM_PREFIX)
