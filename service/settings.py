"""Service settings, read from ``WINGMARK_*`` environment variables.

Nothing is read at import time: :func:`get_settings` builds (and caches) the settings the
first time it is called, and the app's lifespan and routes reach them through it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["BackendKind", "DetectorKind", "RefineKind", "Settings", "ViewsKind", "get_settings"]

BackendKind = Literal["onnxruntime", "tensorrt"]
DetectorKind = str  # a registered detector (runtime.detectors.DETECTORS) or "none"
RefineKind = Literal["never", "detector", "always"]  # runtime.landmarker.REFINE (no runtime import here)
ViewsKind = Literal[1, 5, 9]  # runtime.cascade.VIEWS


class Settings(BaseSettings):
    """Everything the service can be configured with (env prefix ``WINGMARK_``)."""

    model_config = SettingsConfigDict(env_prefix="WINGMARK_", extra="ignore", protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"
    uvicorn_http: Literal["auto", "h11", "httptools"] = Field(
        default="auto", description="uvicorn's HTTP parser (auto: httptools when installed)"
    )
    uvicorn_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto", description="uvicorn's event loop (auto: uvloop when installed)"
    )

    # Connections (uvicorn): idle and incomplete connections are closed, a flood is answered 503
    timeout_keep_alive_s: int = Field(
        default=5, ge=1, description="an idle keep-alive connection is closed after this many seconds"
    )
    head_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a request head must arrive within this many seconds (else 408)",
    )
    limit_concurrency: int = Field(
        default=512, ge=0, description="more open connections or requests than this get 503 (0: no limit)"
    )
    max_head_bytes: int = Field(
        default=16384, ge=1024, description="h11: largest request head (httptools has its own fixed limits)"
    )
    backlog: int = Field(default=2048, ge=1, description="connections the kernel queues before accept")
    proxy_headers: bool = Field(
        default=False,
        description="trust X-Forwarded-For/-Proto from forwarded_allow_ips (only behind a proxy you run)",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="proxies whose forwarded headers are trusted when proxy_headers is on",
    )

    # Models: a store root (default: WINGMARK_MODEL_ROOT or the package's model_store/models) and the
    # models to load as "name" or "name@version"; empty means the default model of each scheme in the store.
    model_root: Path | None = None
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    verify_models: bool = True

    # Inference
    backend: BackendKind = "onnxruntime"
    precision: Literal["auto", "float", "int8"] = Field(
        default="auto",
        description="auto: a model's NAME-int8 variant (same version) where the CPU has int8 dot-product"
        " units (avx512_vnni, avx_vnni, amx_int8) and the store has it, else float; float or int8 force it",
    )
    device: str = "cpu"
    ort_threads: int = Field(
        default=0, ge=0, description="ORT intra-op threads per session (0: ORT decides, one per core)"
    )
    ort_spinning: bool = Field(default=False, description="ORT worker threads busy-wait between ops")
    cascade_pipeline: bool = Field(
        default=True, description="one batcher per stage; later stages' crops cut beside the device thread"
    )
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    batch_policy: Literal["greedy", "timed"] = Field(
        default="greedy",
        description="greedy: a batch runs as soon as the device is free (it grows while the device is busy);"
        " timed: it waits up to max_queue_delay_ms for more crops",
    )
    max_queue_delay_ms: float = Field(
        default=5.0, ge=0.0, le=10_000.0, description="timed policy: the longest a batch waits to fill"
    )
    queue_limit: int = Field(default=256, ge=1)
    deadline_ms: float = Field(default=10_000.0, gt=0.0)

    # Input limits
    max_request_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    min_image_side: int = Field(
        default=8, ge=1, description="images narrower or shorter than this are refused"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, description="a request body must arrive within this many seconds (408)"
    )
    decode_max_side: int = Field(
        default=2048, ge=64, description="JPEGs much larger than this are decoded reduced"
    )
    decode_threads: int = Field(
        default=2, ge=1, description="decode/detect pool (crops have their own thread)"
    )
    decode_worker_pixels: int = Field(
        default=4_000_000,
        ge=0,
        description="images that decode to more pixels than this are decoded one at a time in a separate,"
        " niced process, killed at the request's deadline (0: every image in the decode threads)",
    )
    decode_worker_nice: int = Field(
        default=10, ge=0, le=19, description="how much lower the decode process's priority is"
    )
    max_faces: int = Field(
        default=32, ge=1, description="upper bound for max_faces and for client boxes per request"
    )
    crop_chunk_faces: int = Field(
        default=8, ge=1, description="faces a request crops, then sends to inference, per turn (fairness)"
    )

    # Face detection
    detector: DetectorKind = "ssd_blazeface"  # docs/detectors.md: the figures behind the choice
    refine: RefineKind = Field(
        default="detector",
        description="which faces run the cascade a second time, from the tight box of the first pass's "
        "points (runtime.landmarker.REFINE): none, those the detector found, or all (the client's boxes too)",
    )
    views: ViewsKind = Field(
        default=1,
        description="crops per face at the last stage, moved by 4 % of the face size and averaged "
        "(runtime.cascade.VIEWS): 1, or 5 / 9 for more accuracy at 5 / 9 times that stage's work",
    )
    max_views: ViewsKind = Field(
        default=9, description="the most views a request may ask for (its views option; at least views)"
    )
    detect_max_side: int = Field(
        default=640,
        ge=64,
        description="larger images are detected on a smaller copy (never shrunk below detect_min_face)",
    )
    detect_min_face: float = Field(
        default=80.0,
        gt=0,
        description="smallest face (px of the original image) that detection keeps findable",
    )
    detect_retry_max_side: int = Field(
        default=800,
        ge=0,
        description="images up to this size are searched again upsampled when no face is found",
    )
    detect_upsample: int = Field(default=0, ge=0, le=2)
    detect_threshold: float = Field(default=0.0, description="dlib_hog: the SVM score threshold")
    detect_score_threshold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="CNN detectors: the score threshold (None: the detector's documented default)",
    )

    # Shutdown: seconds uvicorn waits for in-flight requests after SIGTERM/SIGINT
    graceful_timeout_s: float = Field(default=30.0, ge=0.0)

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, value: str) -> str:
        from runtime.detectors import DETECTORS

        if value != "none" and value not in DETECTORS:
            raise ValueError(f"unknown detector {value!r}; known: {[*DETECTORS, 'none']}")
        return value

    def detector_options(self) -> dict[str, Any]:
        """The options the configured detector is built with (``runtime.create_detector``): dlib HOG's
        own, or the CNN detectors' (``min_face``, ``score_threshold``)."""
        if self.detector != "dlib_hog":
            return {"min_face": self.detect_min_face, "score_threshold": self.detect_score_threshold}
        return {
            "max_side": self.detect_max_side,
            "min_face": self.detect_min_face,
            "retry_max_side": self.detect_retry_max_side,
            "upsample": self.detect_upsample,
            "threshold": self.detect_threshold,
            "instances": self.decode_threads,
        }

    def backend_options(self) -> dict[str, Any]:
        """The options the configured backend is built with (``runtime.create_backend``)."""
        if self.backend == "onnxruntime":
            return {"threads": self.ort_threads, "spinning": self.ort_spinning}
        return {}

    @field_validator("views", "max_views", mode="before")
    @classmethod
    def _views_number(cls, value: object) -> object:  # the environment gives "5"
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @model_validator(mode="after")
    def _views_allowed(self) -> Settings:
        if self.views > self.max_views:
            raise ValueError(f"views ({self.views}) must not exceed max_views ({self.max_views})")
        return self

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings (read from the environment once, then cached)."""
    return Settings()
