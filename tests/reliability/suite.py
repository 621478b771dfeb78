"""The reliability checks, shared by the CI tests (tests/reliability/test_*.py) and the benchmark
(``make reliability`` -> ``python -m tests.reliability.run``), all against a real uvicorn process.

- :func:`bad_inputs`: 40+ distinct malformed or hostile requests, each with the status it must get;
  :func:`run_bad_inputs` sends each, checks the problem+json answer and then a good request.
- :func:`run_overload`: many clients at once against a small queue: 429 + Retry-After for the excess,
  each admitted request answered with its own image's landmarks, nothing lost.
- :func:`run_fault_isolation`: a backend that raises (or stalls) on batches holding a poison face.
- :func:`run_soak`: many cheap requests, the server's RSS sampled every ``every`` requests.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image

from tests.service.images import bomb_png, encode, gradient, truncated
from tools.bench import percentile

__all__ = [
    "BadInput",
    "GoodRequest",
    "RawResponse",
    "bad_inputs",
    "good_requests",
    "rss_bytes",
    "run_bad_inputs",
    "run_fault_isolation",
    "run_overload",
    "run_soak",
]

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}
ENDPOINT = "/v1/landmarks"


@dataclass
class RawResponse:
    """What came back on a raw socket (requests httpx cannot or will not send)."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


# -- good requests and their reference answers -----------------------------------------------------


@dataclass(frozen=True)
class GoodRequest:
    """A small image with a client box: cheap, deterministic landmarks."""

    name: str
    data: bytes
    box: tuple[float, float, float, float]

    def post(self, client: httpx.Client, **params: Any) -> httpx.Response:
        return client.post(
            ENDPOINT,
            content=self.data,
            headers={"content-type": "image/png"},
            params={"box": ",".join(f"{v:g}" for v in self.box), **params},
        )


def good_requests(n: int = 8, size: int = 96) -> list[GoodRequest]:
    """``n`` different small textured images (seeded), each with its own box."""
    out = []
    for i in range(n):
        rng = np.random.default_rng(1000 + i)
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR))
        box = (8.0 + i, 10.0 + 2 * i, size - 12.0 + i / 2, size - 6.0)
        out.append(GoodRequest(f"good-{i}", encode(image, "PNG"), box))
    return out


def landmarks_of(response: httpx.Response | RawResponse) -> list[list[list[float]]]:
    body = response.json()
    return [f["landmarks"] for f in body["faces"]]


def check_good(client: httpx.Client, good: GoodRequest, reference: list[list[list[float]]]) -> str | None:
    """None when ``good`` gets 200 and exactly ``reference``; else what went wrong."""
    try:
        r = good.post(client)
    except httpx.TransportError as exc:
        return f"transport error: {exc!r}"
    if r.status_code != 200:
        return f"status {r.status_code}: {r.text[:200]}"
    got = landmarks_of(r)
    if len(got) != len(reference) or not np.allclose(np.asarray(got), np.asarray(reference), atol=0.011):
        return "landmarks differ from the single-request answer"
    return None


# -- raw HTTP ----------------------------------------------------------------------------------------


def raw_request(
    url: str, head: bytes, body_parts: Sequence[tuple[float, bytes]] = (), timeout: float = 15.0
) -> RawResponse:
    """Send ``head`` (request line + headers + blank line), then each (delay_s, bytes) of the body;
    read the response until the server closes or the timeout passes."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout)
    data = b""
    try:
        sock.sendall(head)
        for delay, chunk in body_parts:
            time.sleep(delay)
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server answered and closed: read what it said
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
    finally:
        sock.close()
    return _parse(data)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return False


def _parse(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines or not lines[0].startswith(b"HTTP/"):
        return RawResponse(0, {}, data)
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        headers[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return RawResponse(status, headers, body)


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- the bad inputs ------------------------------------------------------------------------------------


Sender = Callable[[httpx.Client, str], "httpx.Response | RawResponse"]


@dataclass(frozen=True)
class BadInput:
    name: str
    group: str
    status: int  # the status it must get
    send: Sender
    problem_json: bool = True  # False: refused by uvicorn's HTTP parser before the app (plain text)


def _raw(data: bytes, content_type: str = "image/jpeg", **params: Any) -> Sender:
    return lambda c, url: c.post(
        ENDPOINT, content=data, headers={"content-type": content_type}, params=params
    )


def _json(payload: Any, raw_text: str | None = None) -> Sender:
    body = raw_text.encode() if raw_text is not None else json.dumps(payload).encode()
    return lambda c, url: c.post(ENDPOINT, content=body, headers={"content-type": "application/json"})


def _multipart_raw(body: bytes, content_type: str) -> Sender:
    return lambda c, url: c.post(ENDPOINT, content=body, headers={"content-type": content_type})


def _png_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg_bomb(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 frame header is rewritten to claim width x height."""
    data = bytearray(encode(gradient(16, 16), "JPEG", quality=80))
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 7] = height.to_bytes(2, "big")
    data[i + 7 : i + 9] = width.to_bytes(2, "big")
    return bytes(data)


def bad_inputs(limits: dict[str, int]) -> list[BadInput]:
    """The bad inputs; ``limits``: the server's max_request_bytes, max_faces, max_image_pixels."""
    face = good_requests(1)[0]
    jpeg = encode(gradient(160, 120), "JPEG", quality=90)
    png = encode(gradient(160, 120), "PNG")
    webp = encode(gradient(160, 120), "WEBP", quality=80)
    b64 = base64.b64encode(png).decode()
    box = "10,10,80,80"
    too_many = [[1.0 + i, 1.0, 50.0 + i, 60.0] for i in range(limits["max_faces"] + 1)]
    png_bad_crc = bytearray(png)
    png_bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    jpeg_garbled = bytearray(jpeg)
    jpeg_garbled[2:40] = b"\x00" * 38  # the markers after SOI
    boundary = "wingmarkboundary"
    mp_ok_head = (
        f'--{boundary}\r\ncontent-disposition: form-data; name="image"; filename="a.png"\r\n'
        "content-type: image/png\r\n\r\n"
    ).encode()
    big = b"\x00" * (limits["max_request_bytes"] + 1024)

    def chunked_oversize(c: httpx.Client, url: str) -> httpx.Response:
        def gen() -> Any:
            for _ in range(limits["max_request_bytes"] // 65536 + 2):
                yield b"\x00" * 65536

        return c.post(ENDPOINT, content=gen(), headers={"content-type": "image/png"})

    def slow_upload(c: httpx.Client, url: str) -> RawResponse:
        head = _head(
            "POST", ENDPOINT + "?box=1,1,40,40", {"content-type": "image/png", "content-length": "4096"}
        )
        return raw_request(url, head, [(0.0, png[:100])] + [(1.0, b"\x00")] * 8, timeout=20)

    def oversized_header(c: httpx.Client, url: str) -> RawResponse:
        head = _head(
            "POST", ENDPOINT, {"content-type": "image/png", "x-padding": "a" * 200_000, "content-length": "0"}
        )
        return raw_request(url, head)

    def bad_content_length(c: httpx.Client, url: str) -> RawResponse:
        return raw_request(
            url, _head("POST", ENDPOINT, {"content-type": "image/png", "content-length": "abc"})
        )

    def two_files(c: httpx.Client, url: str) -> httpx.Response:
        return c.post(
            ENDPOINT, files=[("image", ("a.png", png, "image/png")), ("image", ("b.png", png, "image/png"))]
        )

    def many_fields(c: httpx.Client, url: str) -> httpx.Response:
        return c.post(
            ENDPOINT, files={"image": ("a.png", png, "image/png")}, data={f"f{i}": "x" for i in range(40)}
        )

    def multipart_without_image(c: httpx.Client, url: str) -> httpx.Response:
        return c.post(ENDPOINT, files={"picture": ("a.png", png, "image/png")})

    def multipart_bad_boxes(c: httpx.Client, url: str) -> httpx.Response:
        return c.post(ENDPOINT, files={"image": ("a.png", png, "image/png")}, data={"boxes": "[[1, 2, 3"})

    def euro_text_field(c: httpx.Client, url: str) -> httpx.Response:
        return c.post(ENDPOINT, files={"image": (None, "€".encode())}, params={"box": box})

    def form_boxes(value: str) -> Sender:
        return lambda c, url: c.post(
            ENDPOINT, files={"image": ("a.png", png, "image/png")}, data={"boxes": value}
        )

    deep = "[" * 100_000 + "]" * 100_000

    def get_landmarks(c: httpx.Client, url: str) -> httpx.Response:
        return c.get(ENDPOINT)

    def unknown_path(c: httpx.Client, url: str) -> httpx.Response:
        return c.get("/v1/../../etc/passwd")

    items = [
        # images: truncated, corrupt, unsupported, degenerate, bombs
        BadInput("jpeg truncated to half", "image", 400, _raw(truncated(jpeg, 0.5), box=box)),
        BadInput("jpeg truncated to its first 20 bytes", "image", 400, _raw(jpeg[:20], box=box)),
        BadInput("jpeg with its markers zeroed", "image", 400, _raw(bytes(jpeg_garbled), box=box)),
        BadInput("jpeg SOI followed by garbage", "image", 400, _raw(b"\xff\xd8" + b"\x13" * 500, box=box)),
        BadInput("png truncated to half", "image", 400, _raw(truncated(png, 0.5), "image/png", box=box)),
        BadInput(
            "png with a wrong IHDR checksum", "image", 400, _raw(bytes(png_bad_crc), "image/png", box=box)
        ),
        BadInput("png signature only", "image", 400, _raw(png[:8], "image/png", box=box)),
        BadInput("png of zero width", "image", 400, _raw(_png_header(0, 10), "image/png", box=box)),
        BadInput("webp truncated to half", "image", 400, _raw(truncated(webp, 0.5), "image/webp", box=box)),
        BadInput(
            "webp RIFF header with garbage",
            "image",
            400,
            _raw(b"RIFF\x00\x01\x00\x00WEBPVP8 " + b"\x07" * 300, "image/webp", box=box),
        ),
        BadInput(
            "random bytes as image/jpeg", "image", 400, _raw(np.random.default_rng(3).bytes(5000), box=box)
        ),
        BadInput(
            "a PDF sent as image/png",
            "image",
            400,
            _raw(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", "image/png"),
        ),
        BadInput("empty body", "image", 400, _raw(b"", "image/png", box=box)),
        BadInput(
            "ICO image (unsupported format)",
            "image",
            415,
            _raw(encode(gradient(32, 32), "ICO"), "image/png", box=box),
        ),
        BadInput("1x1 image", "image", 400, _raw(encode(gradient(1, 1), "PNG"), "image/png")),
        BadInput("30000x1 image", "image", 400, _raw(encode(gradient(30000, 1), "PNG"), "image/png")),
        BadInput("1x30000 image", "image", 400, _raw(encode(gradient(1, 30000), "PNG"), "image/png")),
        BadInput("png bomb 30000x30000", "bomb", 413, _raw(bomb_png(30000, 30000), "image/png", box=box)),
        BadInput("png bomb 100000x1000", "bomb", 413, _raw(_png_header(100_000, 1000), "image/png", box=box)),
        BadInput("jpeg bomb 65000x65000", "bomb", 413, _raw(_jpeg_bomb(65000, 65000), box=box)),
        # media types and bodies
        BadInput("text/plain body", "media-type", 415, _raw(png, "text/plain", box=box)),
        BadInput("application/xml body", "media-type", 415, _raw(b"<a/>", "application/xml", box=box)),
        BadInput(
            "image/svg+xml body",
            "media-type",
            415,
            _raw(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        ),
        BadInput(
            "multipart without a boundary",
            "multipart",
            400,
            _multipart_raw(mp_ok_head + png, "multipart/form-data"),
        ),
        BadInput(
            "multipart with a boundary not in the body",
            "multipart",
            400,
            _multipart_raw(b"--other\r\n" + png, f"multipart/form-data; boundary={boundary}"),
        ),
        BadInput(
            "multipart cut off before its closing boundary",
            "multipart",
            400,
            _multipart_raw(mp_ok_head + png[:50], f"multipart/form-data; boundary={boundary}"),
        ),
        BadInput("multipart without an image field", "multipart", 400, multipart_without_image),
        BadInput("multipart with two files", "multipart", 400, two_files),
        BadInput("multipart with 40 fields", "multipart", 400, many_fields),
        BadInput("multipart with malformed boxes JSON", "multipart", 400, multipart_bad_boxes),
        BadInput("JSON that does not parse", "json", 400, _json(None, raw_text='{"image": ')),
        BadInput("JSON list instead of object", "json", 400, _json([b64])),
        BadInput("JSON image is a number", "json", 400, _json({"image": 12345})),
        BadInput("JSON image is bad base64", "json", 400, _json({"image": "!!!not base64***"})),
        BadInput("JSON image base64 with broken padding", "json", 400, _json({"image": b64[:-3] + "="})),
        BadInput(
            "JSON image base64 of text",
            "json",
            400,
            _json({"image": base64.b64encode(b"hello world").decode()}),
        ),
        BadInput("JSON with an unknown key", "json", 422, _json({"image": b64, "colour": "red"})),
        BadInput("JSON max_faces is a string", "json", 422, _json({"image": b64, "max_faces": "many"})),
        # boxes
        BadInput("box outside the image (right)", "boxes", 400, _raw(png, "image/png", box="500,10,600,100")),
        BadInput(
            "box with negative coordinates only", "boxes", 400, _raw(png, "image/png", box="-90,-90,-10,-10")
        ),
        BadInput("box with NaN (query)", "boxes", 400, _raw(png, "image/png", box="nan,10,80,80")),
        BadInput(
            "box with NaN (JSON token)",
            "boxes",
            400,
            _json(None, raw_text=f'{{"image": "{b64}", "boxes": [[NaN, 1, 50, 50]]}}'),
        ),
        BadInput(
            "box with Infinity",
            "boxes",
            400,
            _json(None, raw_text=f'{{"image": "{b64}", "boxes": [[0, 0, Infinity, 50]]}}'),
        ),
        BadInput("huge box 1e300", "boxes", 400, _json({"image": b64, "boxes": [[0, 0, 1e300, 1e300]]})),
        BadInput(
            "box a million times the image",
            "boxes",
            400,
            _raw(png, "image/png", box="0,0,100000000,100000000"),
        ),
        BadInput("inverted box", "boxes", 400, _raw(png, "image/png", box="80,80,10,10")),
        BadInput("box with three numbers", "boxes", 400, _raw(png, "image/png", box="1,2,3")),
        BadInput("box with words", "boxes", 400, _raw(png, "image/png", box="a,b,c,d")),
        BadInput(
            "boxes JSON of booleans",
            "boxes",
            400,
            _json({"image": b64, "boxes": [[True, False, True, True]]}),
        ),
        BadInput("boxes as a string", "boxes", 400, _json({"image": b64, "boxes": "everywhere"})),
        BadInput(
            f"{limits['max_faces'] + 1} boxes (one over max_faces)",
            "boxes",
            400,
            _json({"image": b64, "boxes": too_many}),
        ),
        # names: scheme, model, traversal
        BadInput("unknown scheme (query)", "names", 422, _raw(png, "image/png", box=box, scheme="wflw98")),
        BadInput(
            "unknown scheme (JSON)",
            "names",
            422,
            _json({"image": b64, "scheme": "../ibug68", "boxes": [[1, 1, 50, 50]]}),
        ),
        BadInput("unknown model", "names", 422, _raw(png, "image/png", box=box, model="no-such-model")),
        BadInput("model ../../etc", "names", 422, _raw(png, "image/png", box=box, model="../../etc")),
        BadInput(
            "model ../../etc/passwd@1.0.0",
            "names",
            422,
            _raw(png, "image/png", box=box, model="../../etc/passwd@1.0.0"),
        ),
        BadInput("model /etc/passwd", "names", 422, _raw(png, "image/png", box=box, model="/etc/passwd")),
        BadInput(
            "model with a NUL byte",
            "names",
            422,
            _json({"image": b64, "model": "test-ibug68\x00../x", "boxes": [[1, 1, 50, 50]]}),
        ),
        BadInput(
            "model version ../../..",
            "names",
            422,
            _raw(png, "image/png", box=box, model="test-ibug68@../../.."),
        ),
        BadInput("model name 10 kB long", "names", 422, _raw(png, "image/png", box=box, model="m" * 10_000)),
        # parameters
        BadInput("max_faces=0", "parameters", 422, _raw(png, "image/png", max_faces=0)),
        BadInput("max_faces=-3", "parameters", 422, _raw(png, "image/png", max_faces=-3)),
        BadInput("max_faces=1e9", "parameters", 422, _json({"image": b64, "max_faces": 10**9})),
        BadInput(
            "deadline_ms=5e-324 (under the 10 ms minimum)",
            "parameters",
            422,
            _raw(png, "image/png", box=box, deadline_ms="5e-324"),
        ),
        BadInput("deadline_ms=-5", "parameters", 422, _raw(png, "image/png", box=box, deadline_ms=-5)),
        BadInput(
            "deadline_ms=NaN",
            "parameters",
            422,
            _json(None, raw_text=f'{{"image": "{b64}", "deadline_ms": NaN, "boxes": [[1, 1, 50, 50]]}}'),
        ),
        # found by the adversarial test of issue 20 (each was a 500 before)
        BadInput("multipart text field image=€", "multipart", 400, euro_text_field),
        BadInput(
            "box coordinate of 400 digits (JSON)",
            "boxes",
            400,
            _json(None, raw_text=f'{{"image": "{b64}", "boxes": [[{"9" * 400}, 1, 2, 3]]}}'),
        ),
        BadInput(
            "box coordinate of 400 digits (form)", "multipart", 400, form_boxes(f"[[1, 1, {'9' * 400}, 9]]")
        ),
        BadInput(
            "JSON body nested 100,000 deep",
            "json",
            400,
            _json(None, raw_text=f'{{"image": "{b64}", "boxes": {deep}}}'),
        ),
        BadInput("form boxes nested 100,000 deep", "multipart", 400, form_boxes(deep)),
        BadInput(
            "query boxes nested 3,000 deep",
            "boxes",
            400,
            _raw(png, "image/png", boxes="[" * 3000 + "]" * 3000),
        ),
        BadInput(
            "max_faces=Infinity (JSON)",
            "parameters",
            422,
            _json(None, raw_text=f'{{"image": "{b64}", "boxes": [[1, 1, 50, 50]], "max_faces": Infinity}}'),
        ),
        BadInput(
            "max_faces=1e400 (JSON)",
            "parameters",
            422,
            _json(None, raw_text=f'{{"image": "{b64}", "boxes": [[1, 1, 50, 50]], "max_faces": 1e400}}'),
        ),
        BadInput(
            "deadline_ms of 400 digits (JSON)",
            "parameters",
            422,
            _json(
                None, raw_text=f'{{"image": "{b64}", "boxes": [[1, 1, 50, 50]], "deadline_ms": {"9" * 400}}}'
            ),
        ),
        BadInput(
            "box of sub-ULP size",
            "boxes",
            400,
            _raw(png, "image/png", box="10,10,10.000000000000002,10.000000000000002"),
        ),
        BadInput("boxes=[[]]", "boxes", 400, _raw(png, "image/png", boxes="[[]]")),
        # HTTP level
        BadInput("body over max_request_bytes (content-length)", "http", 413, _raw(big, "image/png")),
        BadInput("body over max_request_bytes (chunked)", "http", 413, chunked_oversize),
        BadInput("slow upload (1 byte/s, stalls)", "http", 408, slow_upload),
        BadInput("GET on the POST endpoint", "http", 405, get_landmarks),
        BadInput("path traversal in the URL", "http", 404, unknown_path),
        BadInput("200 kB header", "http", 400, oversized_header, problem_json=False),
        BadInput("content-length: abc", "http", 400, bad_content_length, problem_json=False),
    ]
    del face
    return items


def _is_problem(r: httpx.Response | RawResponse, status: int) -> str | None:
    ctype = r.headers.get("content-type", "")
    if not ctype.startswith("application/problem+json"):
        return f"content-type {ctype!r}"
    try:
        body = r.json()
    except ValueError:
        return "body is not JSON"
    if not (isinstance(body, dict) and set(body) >= PROBLEM_KEYS and body["status"] == status):
        return f"not a problem document: {str(body)[:200]}"
    if not str(body["type"]).startswith("urn:wingmark:problem:"):
        return f"type {body['type']!r}"
    return None


def run_bad_inputs(url: str, limits: dict[str, int], process: Any | None = None) -> dict[str, Any]:
    """Send every bad input, each followed by a good request; returns the per-input record."""
    goods = good_requests(2)
    records: list[dict[str, Any]] = []
    with httpx.Client(base_url=url, timeout=60) as c:
        references = [landmarks_of(g.post(c)) for g in goods]
        for i, bad in enumerate(bad_inputs(limits)):
            t0 = time.monotonic()
            error = None
            try:
                r = bad.send(c, url)
                status = r.status_code
                if status != bad.status:
                    error = f"status {status}, expected {bad.status}: {r.content[:200]!r}"
                elif bad.problem_json:
                    error = _is_problem(r, status)
            except httpx.HTTPError as exc:
                status, error = 0, f"no answer: {exc!r}"
            elapsed = time.monotonic() - t0
            good = goods[i % len(goods)]
            after = check_good(c, good, references[i % len(goods)])
            alive = process is None or process.poll() is None
            records.append({
                "name": bad.name, "group": bad.group, "expected": bad.status, "status": status,
                "problem_json": bad.problem_json, "seconds": round(elapsed, 3), "ok": error is None,
                "error": error, "next_good_request": after or "ok", "process_alive": alive,
            })  # fmt: skip
    return {
        "inputs": records,
        "count": len(records),
        "passed": sum(r["ok"] and r["next_good_request"] == "ok" for r in records),
        "crashes": sum(not r["process_alive"] for r in records),
        "statuses": _count(str(r["status"]) for r in records),
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


# -- overload ----------------------------------------------------------------------------------------


def run_overload(
    url: str, *, queue_limit: int, requests_per_client: int, concurrency: int | None = None
) -> dict[str, Any]:
    """``concurrency`` (default 4x queue_limit) clients at once, each sending ``requests_per_client``."""
    concurrency = concurrency or 4 * queue_limit
    goods = good_requests(8)
    with httpx.Client(base_url=url, timeout=60) as c:
        references = [landmarks_of(g.post(c)) for g in goods]
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(concurrency)

    def client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            start.wait()
            for j in range(requests_per_client):
                i = (k + j) % len(goods)
                t0 = time.monotonic()
                rec: dict[str, Any] = {"image": i}
                try:
                    r = goods[i].post(c)
                    rec["status"] = r.status_code
                    if r.status_code == 200:
                        got = landmarks_of(r)
                        rec["correct"] = bool(
                            np.allclose(np.asarray(got), np.asarray(references[i]), atol=0.011)
                        )
                    elif r.status_code == 429:
                        rec["retry_after"] = r.headers.get("retry-after")
                        rec["problem"] = _is_problem(r, 429) is None
                except httpx.HTTPError as exc:
                    rec["status"], rec["error"] = 0, repr(exc)
                rec["seconds"] = time.monotonic() - t0
                with lock:
                    results.append(rec)

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, range(concurrency)))
    wall = time.monotonic() - t0
    admitted = [r for r in results if r["status"] == 200]
    rejected = [r for r in results if r["status"] == 429]
    lost = [r for r in results if r["status"] not in (200, 429) or (r["status"] == 200 and not r["correct"])]
    retry = [
        r for r in rejected if r.get("retry_after") and str(r["retry_after"]).isdigit() and r.get("problem")
    ]
    return {
        "queue_limit": queue_limit, "concurrency": concurrency, "requests": len(results),
        "admitted": len(admitted), "rejected_429": len(rejected),
        "rejected_with_retry_after": len(retry), "lost": len(lost),
        "admitted_correct": sum(bool(r.get("correct")) for r in admitted),
        "other_statuses": _count(str(r["status"]) for r in lost),
        "p50_admitted_ms": round(percentile([r["seconds"] for r in admitted], 50) * 1000, 1),
        "p99_admitted_ms": round(percentile([r["seconds"] for r in admitted], 99) * 1000, 1),
        "p99_rejected_ms": round(percentile([r["seconds"] for r in rejected], 99) * 1000, 1),
        "wall_s": round(wall, 2),
    }  # fmt: skip


# -- fault isolation ------------------------------------------------------------------------------


def poison_request() -> GoodRequest:
    flat = np.full((96, 96, 3), 77, np.uint8)
    return GoodRequest("poison", encode(flat, "PNG"), (20.0, 20.0, 70.0, 70.0))


def _batches(log: Path) -> list[dict[str, Any]]:
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def run_fault_isolation(
    url: str, log: Path, *, mode: str, rounds: int = 3, goods_per_round: int = 12
) -> dict[str, Any]:
    """Good and poison requests at once; a raising backend must fail exactly the poisoned batches'
    requests (counted from the backend's own batch log), a stalling one only delay them."""
    goods = good_requests(8)
    poison = poison_request()
    with httpx.Client(base_url=url, timeout=60) as c:
        references = [landmarks_of(g.post(c)) for g in goods]
        before = len(_batches(log))
        sequential: dict[str, Any] = {"poison_alone": poison.post(c, deadline_ms=1000).status_code}
        sequential["good_after"] = check_good(c, goods[0], references[0]) or "ok"
    statuses: list[int] = []
    wrong = 0
    failed_expected = 0
    for _ in range(rounds):
        jobs: list[tuple[int | None, float]] = [(i % 8, 0.0) for i in range(goods_per_round)]
        jobs.insert(goods_per_round // 2, (None, 0.0))

        def send(job: tuple[int | None, float]) -> tuple[int | None, httpx.Response | None]:
            i, _ = job
            with httpx.Client(base_url=url, timeout=60) as cc:
                try:
                    if i is None:
                        return None, poison.post(cc, deadline_ms=1000)
                    return i, goods[i].post(cc)
                except httpx.HTTPError:
                    return i, None

        mark = len(_batches(log))
        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(send, jobs))
        round_batches = _batches(log)[mark:]
        failed_expected += sum(b["size"] for b in round_batches if b["failed"])
        for i, r in answers:
            statuses.append(r.status_code if r is not None else 0)
            if (
                i is not None
                and r is not None
                and r.status_code == 200
                and not np.allclose(np.asarray(landmarks_of(r)), np.asarray(references[i]), atol=0.011)
            ):
                wrong += 1
    with httpx.Client(base_url=url, timeout=60) as c:
        after = [check_good(c, g, ref) or "ok" for g, ref in zip(goods, references, strict=True)]
    batches = _batches(log)[before:]
    counts = _count(str(s) for s in statuses)
    return {
        "mode": mode,
        "requests": len(statuses),
        "statuses": counts,
        "poisoned_batches": sum(b["poison"] > 0 for b in batches),
        "failed_batches": sum(b["failed"] for b in batches),
        "requests_in_failed_batches": failed_expected,
        "failed_requests": counts.get("500", 0) + counts.get("504", 0),
        "good_answers_wrong": wrong,
        "sequential": sequential,
        "good_requests_after": "ok" if all(a == "ok" for a in after) else after,
    }


# -- soak ------------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class SoakState:
    done: int = 0
    errors: int = 0
    wrong: int = 0
    samples: list[dict[str, float]] = field(default_factory=list)


def run_soak(
    url: str, pid: int, *, total: int, every: int = 1000, concurrency: int = 4,
    progress: Callable[[SoakState, float], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``total`` cheap requests (small images with a client box) from ``concurrency`` clients; the
    server's RSS is sampled before the first and after every ``every`` requests."""
    goods = good_requests(4)
    with httpx.Client(base_url=url, timeout=60) as c:
        references = [landmarks_of(g.post(c)) for g in goods]
    state = SoakState()
    lock = threading.Lock()
    t0 = time.monotonic()
    state.samples.append({"requests": 0, "rss_bytes": rss_bytes(pid), "seconds": 0.0})
    counter = iter(range(total))

    def worker(_: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as c:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                g = n % len(goods)
                try:
                    r = goods[g].post(c)
                    ok = r.status_code == 200
                    right = ok and np.allclose(
                        np.asarray(landmarks_of(r)), np.asarray(references[g]), atol=0.011
                    )
                except httpx.HTTPError:
                    ok = right = False
                with lock:
                    state.done += 1
                    state.errors += not ok
                    state.wrong += ok and not right
                    if state.done % every == 0:
                        elapsed = time.monotonic() - t0
                        state.samples.append(
                            {
                                "requests": state.done,
                                "rss_bytes": rss_bytes(pid),
                                "seconds": round(elapsed, 2),
                            }
                        )
                        if progress is not None:
                            progress(state, elapsed)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    wall = time.monotonic() - t0
    rss = [s["rss_bytes"] for s in state.samples]
    steady = rss[1:] or rss  # from the first checkpoint on (the first thousand requests warm caches up)
    return {
        "requests": state.done, "errors": state.errors, "wrong_answers": state.wrong,
        "concurrency": concurrency, "seconds": round(wall, 1),
        "requests_per_second": round(state.done / wall, 1) if wall > 0 else math.nan,
        "rss_start_bytes": rss[0], "rss_first_checkpoint_bytes": steady[0], "rss_end_bytes": rss[-1],
        "rss_max_bytes": max(rss), "rss_min_after_warmup_bytes": min(steady),
        "rss_growth_after_warmup": round(max(steady) / min(steady) - 1, 4),
        "samples": state.samples,
    }  # fmt: skip


# -- logs and schemathesis ----------------------------------------------------------------------


def log_has_image_bytes(text: str) -> bool:
    """Whether a server log holds image bytes (raw PNG/JPEG signatures, or long base64 runs)."""
    import re

    signatures = ("\\x89PNG", "PNG\r\n", "\\xff\\xd8\\xff", "iVBORw0KGgo", "/9j/")
    if any(s in text for s in signatures):
        return True
    # a long base64 run with the variety of encoded data (a 10 kB "mmmm..." model name is not one)
    return any(len(set(run)) >= 32 for run in re.findall(r"[A-Za-z0-9+/]{400,}", text))


def run_schemathesis(url: str, *, max_examples: int, workdir: Path) -> dict[str, Any]:
    """schemathesis's CLI against ``url``/openapi.json, checking that no response is a 5xx and that every
    response conforms to the schema the OpenAPI document declares (status code, media type, body)."""
    import shutil
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version

    try:
        st_version = version("schemathesis")
    except PackageNotFoundError:
        return {"ran": False, "summary": "schemathesis is not installed (pip install -e '.[reliability]')",
                "server_errors": -1, "version": None, "command": ""}  # fmt: skip
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    report = workdir / "schemathesis-junit.xml"
    cmd = [exe, "run", f"{url}/openapi.json", "--checks", "not_a_server_error,response_schema_conformance",
           "--max-examples", str(max_examples),
           "--report", "junit", "--report-junit-path", str(report), "--seed", "1"]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=1800, cwd=workdir
    )  # its cache: not here
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if ln.strip()]
    cases = [lines[i + 1].strip() for i, ln in enumerate(lines[:-1]) if ln.strip() == "Test cases:"]
    server_errors = out.count("Server error")
    return {
        "ran": True, "version": st_version, "exit_code": proc.returncode,
        "seconds": round(time.monotonic() - t0, 1),
        "command": " ".join(["schemathesis", "run", "<url>/openapi.json", *cmd[3:7], "--seed", "1"]),
        "server_errors": server_errors if proc.returncode != 0 else 0,
        "summary": f"{cases[-1] if cases else 'no test cases reported'}; "
        + ("no 5xx" if proc.returncode == 0 else f"FAILED (exit code {proc.returncode})"),
        "output_tail": lines[-40:],
    }  # fmt: skip
