"""The diagnostic page and its JSON API (FastAPI on the Starlette/uvicorn stack MLflow installs).

Routes: ``GET /`` (the page), ``GET /static/<file>``, ``POST /api/predict`` (multipart
field ``file``, repeatable), ``POST /api/explain`` (one ``file``, answers ``image/png``),
``GET /api/model``, ``GET /model-card``, ``GET /healthz``.

Safety, in the order a request meets it:

* its ``Host`` header must name this page (loopback names, ``--host``, ``--trusted-host``:
  400 otherwise, so a DNS-rebinding page cannot reach it), and a POST whose ``Origin`` is
  another site is refused (403);
* the body is bounded three ways before it is parsed: its own size (413), the bodies being
  read at once and the bytes all requests hold together (503 with ``Retry-After`` past
  either, without waiting: a flood is answered, not queued);
* it is parsed in memory as it arrives (Starlette spools uploads over 1 MiB to a temporary
  file; here the spool's limit is above the body's, so an upload never touches the disk);
* each image's format (PNG or JPEG, 415 otherwise) and declared pixel count are checked
  before it is decoded (:mod:`clot_hpo.serve.images`), and requests decode and score within
  a memory budget (``Limits.decode_memory_bytes``, each image's need measured per pixel), so
  concurrent requests of large images wait instead of exhausting memory.

There is no authentication: the command binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from clot_hpo.data.dicom import DicomSettings
from clot_hpo.data.limits import DEFAULT_DECODE_MEMORY_MB, MemoryBudget
from clot_hpo.serve.images import (
    DEFAULT_MAX_PIXELS,
    DecodedImage,
    ImageRejected,
    decode_image_bytes,
    read_upload_header,
)
from clot_hpo.serve.service import ExplanationsUnavailable, ModelService

FIELD = "file"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# No external source of any kind: the page works offline, and injected markup could not
# load a script from elsewhere. blob: is how the page shows the uploaded image and overlay.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MIB = 2**20


@dataclass(frozen=True)
class Limits:
    """What one request may carry, and how much work all requests may have in flight."""

    max_file_bytes: int = 10 * MIB
    max_files: int = 16
    max_request_bytes: int = 32 * MIB
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * MIB
    max_concurrent_uploads: int = 4
    max_buffered_bytes: int = 128 * MIB
    retry_after_s: int = 2
    trusted_hosts: tuple[str, ...] = field(default=LOOPBACK_NAMES)
    # How a DICOM upload becomes an image (the study's data.dicom window and frame): part of
    # what the page accepts, as for `predict`.
    dicom: DicomSettings = field(default_factory=DicomSettings)

    @property
    def max_body_bytes(self) -> int:
        """The body limit: the request limit, or every file at its limit plus framing if that is less."""
        return min(self.max_request_bytes, self.max_file_bytes * self.max_files + 64 * 1024)


class Rejected(Exception):
    """A request refused with ``status`` and a message that names the rule and what came."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Admission:
    """The page's in-flight work: bodies being read at once, and bytes all requests hold.

    Past either limit a request is refused at once (503 with ``Retry-After``) rather than
    queued: waiting requests would hold their sockets and, once admitted, their bodies.
    Used from the event loop only (never from the thread pool), so it needs no lock.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.reading = 0
        self.held = 0
        self.peak_held = 0  # for tests and benchmarks

    def busy(self, why: str) -> Rejected:
        """The 503 that tells a client to come back."""
        wait = self.limits.retry_after_s
        return Rejected(503, f"the page is busy ({why}); retry in {wait} s", {"Retry-After": str(wait)})

    @contextmanager
    def reading_slot(self) -> Iterator[None]:
        """Hold one of the ``max_concurrent_uploads`` body reads for the block."""
        if self.reading >= self.limits.max_concurrent_uploads:
            raise self.busy(f"{self.reading} uploads are being received, the most at once")
        self.reading += 1
        try:
            yield
        finally:
            self.reading -= 1

    def reserve(self, nbytes: int) -> None:
        """Count ``nbytes`` more as held, or refuse (503) past ``max_buffered_bytes``."""
        if self.held + nbytes > self.limits.max_buffered_bytes:
            raise self.busy(
                f"requests in flight hold {self.held:,} bytes and this one needs {nbytes:,} more; "
                f"the most is {self.limits.max_buffered_bytes:,}"
            )
        self.held += nbytes
        self.peak_held = max(self.peak_held, self.held)

    def release(self, nbytes: int) -> None:
        """Give back what :meth:`reserve` took."""
        self.held -= nbytes


def _static(name: str) -> str:
    return resources.files("clot_hpo.serve").joinpath("static", name).read_text(encoding="utf-8")


def host_name(host_header: str) -> str:
    """The name part of a ``Host`` header (no port, no IPv6 brackets), lowercase."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_origin(headers: Any, method: str, trusted: frozenset[str]) -> None:
    """Refuse a request for another name (400) and a cross-site POST (403).

    A page on any site may make a browser POST here, and one whose name resolves to
    127.0.0.1 (DNS rebinding) may read the answers: the ``Host`` header is what gives it away.
    """
    host = headers.get("host", "")
    if host_name(host) not in trusted:
        raise Rejected(
            400,
            f"the Host header must name this page ({', '.join(sorted(trusted))}), but it is {host!r}; "
            "start `clot-hpo serve` with --trusted-host NAME to answer to another name",
        )
    if method in ("GET", "HEAD", "OPTIONS"):
        return
    origin = headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or parts.netloc.lower() != host.strip().lower():
            raise Rejected(403, f"a POST must come from this page ({host}), but its Origin is {origin!r}")
    elif headers.get("sec-fetch-site") == "cross-site":
        raise Rejected(
            403, "a POST must come from this page, but the browser says it comes from another site"
        )


async def _uploads(
    request: Request, limits: Limits, admission: Admission, held: list[int], *, at_most: int
) -> list[tuple[str, bytes]]:
    """``(filename, bytes)`` of each ``file`` part, parsed in memory as the body arrives.

    The bytes read are added to ``held`` (reserved in ``admission``; the caller releases them).
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise Rejected(
            400,
            f"send the images as multipart/form-data in field {FIELD!r}, "
            f"not {content_type or 'no content type'!r}",
        )
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(
            413, f"a request may carry at most {limit:,} bytes, but this one declares {int(declared):,}"
        )

    def reserve(nbytes: int) -> None:
        admission.reserve(nbytes)
        held[0] += nbytes

    class InMemoryParser(MultiPartParser):
        spool_max_size = limit + 1  # never rolls over to a file on disk

    async def stream() -> AsyncGenerator[bytes, None]:
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:  # a chunked body declares nothing: count as it arrives
                raise Rejected(413, f"a request may carry at most {limit:,} bytes, but this one sent more")
            if total > held[0]:
                reserve(total - held[0])
            yield chunk

    with admission.reading_slot():
        if declared is not None and declared.isdigit():
            reserve(int(declared))  # all of it up front: refused before a byte is read
        try:
            form = await InMemoryParser(request.headers, stream(), max_files=at_most, max_fields=16).parse()
        except MultiPartException as exc:
            raise Rejected(400, f"the multipart body cannot be read: {exc.message}") from None
    uploads: list[tuple[str, bytes]] = []
    try:
        for value in form.getlist(FIELD):
            if not isinstance(value, UploadFile):
                raise Rejected(400, f"field {FIELD!r} must be a file, but got a text value")
            name = value.filename or "upload"
            data = await value.read()
            await value.close()  # its in-memory spool goes now: one copy of each file at a time
            if len(data) > limits.max_file_bytes:
                raise Rejected(
                    413,
                    f"{name}: a file may have at most {limits.max_file_bytes:,} bytes, but has {len(data):,}",
                )
            uploads.append((name, data))
    finally:
        await form.close()
    if not uploads:
        raise Rejected(400, f"no image: send one or more files in multipart field {FIELD!r}")
    if len(uploads) > at_most:
        raise Rejected(413, f"at most {at_most} files per request, but got {len(uploads)}")
    return uploads


@contextmanager
def holding(
    budget: MemoryBudget,
    uploads: list[tuple[str, bytes]],
    max_pixels: int,
    dicom: DicomSettings | None = None,
) -> Iterator[None]:
    """Check every upload's header, then wait until their decoding fits in ``budget`` and hold it.

    Raises:
        ImageRejected: an upload's format or declared size is refused (before any decoding).
    """
    headers = [read_upload_header(data, name, max_pixels=max_pixels, dicom=dicom) for name, data in uploads]
    need = sum(header.decode_bytes for header in headers)
    with budget.hold(need):
        yield


def decode_uploads(
    uploads: list[tuple[str, bytes]],
    image_size: int,
    max_pixels: int,
    *,
    display: bool = False,
    dicom: DicomSettings | None = None,
) -> tuple[list[DecodedImage], list[float]]:
    """Each upload decoded for the model, and the milliseconds each took."""
    images, ms = [], []
    for name, data in uploads:
        start = time.perf_counter()
        images.append(
            decode_image_bytes(data, name, image_size, max_pixels=max_pixels, display=display, dicom=dicom)
        )
        ms.append((time.perf_counter() - start) * 1000)
    return images, ms


def create_app(service: ModelService, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving ``service``'s model."""
    limits = limits or Limits()
    budget = MemoryBudget(limits.decode_memory_bytes)  # shared by every request
    admission = Admission(limits)
    trusted = frozenset(host_name(name) for name in (*LOOPBACK_NAMES, *limits.trusted_hosts))
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN.
    app = FastAPI(title="clot-hpo diagnostic page", docs_url=None, redoc_url=None)
    app.state.admission, app.state.budget = admission, budget
    page = _static("index.html")
    static = {name: (_static(name), kind) for name, kind in STATIC_FILES.items()}
    info = service.info
    model_ref = {"name": info.name, "version": info.version, "uri": info.uri}

    def refusal(exc: Rejected | ImageRejected) -> JSONResponse:
        headers = {**SECURITY_HEADERS, **getattr(exc, "headers", {})}
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            check_origin(request.headers, request.method, trusted)
        except Rejected as exc:
            return refusal(exc)
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        return refusal(exc)

    @app.exception_handler(ImageRejected)
    async def image_rejected(request: Request, exc: ImageRejected) -> JSONResponse:
        return refusal(exc)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in static:
            return JSONResponse({"detail": f"no static file {name!r}"}, status_code=404)
        text, kind = static[name]
        return Response(text, media_type=f"{kind}; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        # The model is loaded (and warmed up) before the server accepts a connection.
        return {"status": "ok", "model": model_ref}

    @app.get("/api/model")
    async def model_info() -> dict[str, Any]:
        return {**info.as_dict(), "model_card_url": "/model-card" if service.model_card else None}

    @app.get("/model-card")
    async def model_card() -> Response:
        if service.model_card is None:
            return JSONResponse({"detail": f"{info.uri} has no model card"}, status_code=404)
        # Plain text: the card's Markdown is shown as written, never rendered as HTML.
        return PlainTextResponse(service.model_card)

    @app.post("/api/predict")
    async def predict(request: Request) -> list[dict[str, Any]]:
        held = [0]
        try:
            uploads = await _uploads(request, limits, admission, held, at_most=limits.max_files)

            def work() -> list[dict[str, Any]]:
                with holding(budget, uploads, limits.max_pixels, limits.dicom):
                    images, decode_ms = decode_uploads(
                        uploads, info.image_size, limits.max_pixels, dicom=limits.dicom
                    )
                    scores = service.score(images, decode_ms)
                return [
                    {
                        "filename": s.filename,
                        "probability": round(s.probability, 6),
                        "label": s.label,
                        "decision": "clot" if s.label else "no clot",
                        "threshold": service.threshold,
                        "model": model_ref,
                        "ms": s.ms,
                    }
                    for s in scores
                ]

            return await run_in_threadpool(work)
        finally:
            admission.release(held[0])

    @app.post("/api/explain")
    async def explain(request: Request) -> Response:
        if info.explanations_unavailable:  # answered before the body is read
            raise Rejected(501, info.explanations_unavailable)
        held = [0]
        try:
            uploads = await _uploads(request, limits, admission, held, at_most=1)

            def work() -> tuple[bytes, float, float]:
                start = time.perf_counter()
                with holding(budget, uploads, limits.max_pixels, limits.dicom):
                    images, _ = decode_uploads(
                        uploads, info.image_size, limits.max_pixels, display=True, dicom=limits.dicom
                    )
                    try:
                        png, prob = service.explain(images[0])
                    except ExplanationsUnavailable as exc:
                        raise Rejected(501, str(exc)) from None
                return png, prob, (time.perf_counter() - start) * 1000

            png, prob, ms = await run_in_threadpool(work)
        finally:
            admission.release(held[0])
        headers = {
            "X-Probability": f"{prob:.6f}",
            "X-Threshold": f"{service.threshold:.6f}",
            "X-Ms": f"{ms:.2f}",
        }
        return Response(png, media_type="image/png", headers=headers)

    return app


__all__ = [
    "FIELD",
    "LOOPBACK_NAMES",
    "Admission",
    "Limits",
    "Rejected",
    "check_origin",
    "create_app",
    "decode_uploads",
    "holding",
    "host_name",
]
