"""The diagnostic page and its JSON API (FastAPI on the Starlette/uvicorn stack MLflow installs).

Routes: ``GET /`` (the page), ``GET /static/<file>``, ``POST /api/predict`` (multipart
field ``file``, repeatable), ``POST /api/explain`` (one ``file``, answers ``image/png``),
``GET /api/model``, ``GET /model-card``, ``GET /healthz``.

Safety: the body is read with a byte limit (413) before it is parsed, and parsed in
memory (Starlette spools uploads over 1 MiB to a temporary file; here the spool's limit
is above the body's, so an upload never touches the disk); each image's declared pixel
count is checked before it is decoded (:mod:`clot_hpo.serve.images`), and requests decode
and score within a memory budget (``Limits.decode_memory_bytes``, estimated from the images'
headers), so concurrent requests of large images wait instead of exhausting memory. There is
no authentication: the command binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import io
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from clot_hpo.data.limits import DEFAULT_DECODE_MEMORY_MB, MemoryBudget, read_header
from clot_hpo.serve.images import DEFAULT_MAX_PIXELS, DecodedImage, ImageRejected, decode_image_bytes
from clot_hpo.serve.service import ModelService

FIELD = "file"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# No external source of any kind: the page works offline, and injected markup could not
# load a script from elsewhere. blob: is how the page shows the uploaded image and overlay.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_file_bytes: int = 10 * 1024 * 1024
    max_files: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS
    decode_memory_bytes: int = DEFAULT_DECODE_MEMORY_MB * 2**20

    @property
    def max_body_bytes(self) -> int:
        """The body limit: every file at its limit, plus room for the multipart framing."""
        return self.max_file_bytes * self.max_files + 64 * 1024


class Rejected(Exception):
    """A request refused with ``status`` and a message that names the rule and what came."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _static(name: str) -> str:
    return resources.files("clot_hpo.serve").joinpath("static", name).read_text(encoding="utf-8")


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected(
            413, f"a request may carry at most {limit:,} bytes, but this one declares {int(declared):,}"
        )
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:  # a chunked body declares nothing: count as it arrives
            raise Rejected(413, f"a request may carry at most {limit:,} bytes, but this one sent more")
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploads(request: Request, limits: Limits, *, at_most: int) -> list[tuple[str, bytes]]:
    """``(filename, bytes)`` of each ``file`` part, parsed in memory."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise Rejected(
            400,
            f"send the images as multipart/form-data in field {FIELD!r}, "
            f"not {content_type or 'no content type'!r}",
        )
    body = await _read_body(request, limits.max_body_bytes)

    class InMemoryParser(MultiPartParser):
        spool_max_size = limits.max_body_bytes + 1  # never rolls over to a file on disk

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

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


def _decode_bytes(data: bytes, max_pixels: int) -> int:
    """Estimated memory of decoding one upload (0 for one that is refused before decoding)."""
    try:
        header = read_header(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - decode_image_bytes names whatever is wrong with it
        return 0
    return header.decode_bytes() if header.pixels <= max_pixels else 0


@contextmanager
def holding(budget: MemoryBudget, uploads: list[tuple[str, bytes]], max_pixels: int) -> Iterator[None]:
    """Wait until the request's images fit in ``budget``; hold that memory for the block."""
    with budget.hold(sum(_decode_bytes(data, max_pixels) for _, data in uploads)):
        yield


def decode_uploads(
    uploads: list[tuple[str, bytes]], image_size: int, max_pixels: int
) -> tuple[list[DecodedImage], list[float]]:
    """Each upload decoded for the model, and the milliseconds each took."""
    images, ms = [], []
    for name, data in uploads:
        start = time.perf_counter()
        images.append(decode_image_bytes(data, name, image_size, max_pixels=max_pixels))
        ms.append((time.perf_counter() - start) * 1000)
    return images, ms


def create_app(service: ModelService, limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving ``service``'s model."""
    limits = limits or Limits()
    budget = MemoryBudget(limits.decode_memory_bytes)  # shared by every request
    # No /docs or /redoc: FastAPI's pages load their scripts from a CDN.
    app = FastAPI(title="clot-hpo diagnostic page", docs_url=None, redoc_url=None)
    page = _static("index.html")
    static = {name: (_static(name), kind) for name, kind in STATIC_FILES.items()}
    info = service.info
    model_ref = {"name": info.name, "version": info.version, "uri": info.uri}

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(ImageRejected)
    async def image_rejected(request: Request, exc: ImageRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

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
        uploads = await _uploads(request, limits, at_most=limits.max_files)

        def work() -> list[dict[str, Any]]:
            with holding(budget, uploads, limits.max_pixels):
                images, decode_ms = decode_uploads(uploads, info.image_size, limits.max_pixels)
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

    @app.post("/api/explain")
    async def explain(request: Request) -> Response:
        uploads = await _uploads(request, limits, at_most=1)

        def work() -> tuple[bytes, float, float]:
            start = time.perf_counter()
            with holding(budget, uploads, limits.max_pixels):
                images, _ = decode_uploads(uploads, info.image_size, limits.max_pixels)
                png, prob = service.explain(images[0])
            return png, prob, (time.perf_counter() - start) * 1000

        png, prob, ms = await run_in_threadpool(work)
        headers = {
            "X-Probability": f"{prob:.6f}",
            "X-Threshold": f"{service.threshold:.6f}",
            "X-Ms": f"{ms:.2f}",
        }
        return Response(png, media_type="image/png", headers=headers)

    return app


__all__ = ["FIELD", "Limits", "Rejected", "create_app", "decode_uploads", "holding"]
