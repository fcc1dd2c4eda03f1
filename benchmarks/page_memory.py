"""Peak memory of the page's server under hostile uploads, for one or more checkouts of the code.

    .venv/bin/python benchmarks/page_memory.py                          # this checkout
    .venv/bin/python benchmarks/page_memory.py --code /old/checkout --code .   # before / after

For each checkout (``--code``, the folder whose ``clot_hpo`` the server runs) and each
scenario it starts ``clot-hpo serve`` on loopback with an untrained tiny CNN (32 px,
registered in a temporary store), resets the server process's peak RSS
(``/proc/PID/clear_refs``), sends the requests, reads ``VmHWM`` from ``/proc/PID/status`` and
stops the server:

* ``gif``: one animated GIF of 300 full-canvas frames of 2000 x 2000 (about 1.4 MB);
* ``gif x3``: three of them at once;
* ``6 x 16 x 10 MB``: six parallel requests, each of 16 files of 10 MB;
* ``6 x 3 x 10 MB``: six parallel requests, each of 3 files of 10 MB (within the page's
  default request limit: what the cap on uploads in flight does).

Prints one JSON object: per checkout and scenario the idle RSS, the peak, the rise and the
HTTP statuses; with two checkouts, the first's rise over the second's per scenario.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.mlflow_server import free_port  # noqa: E402

MIB = 2**20


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def animated_gif(path: Path, frames: int = 300, side: int = 2000) -> bytes:
    """A GIF of ``frames`` full-canvas frames of ``side`` x ``side``, about 1.4 MB (cached).

    Each frame is black but for two opposite corner pixels that change from one frame to the
    next, so the encoder cannot crop a frame to a small changed area: every frame is a whole
    2000 x 2000 raster (4.7 KB compressed), as in the review's file.
    """
    if path.is_file():
        return path.read_bytes()
    import numpy as np
    from PIL import Image

    images = []
    for i in range(frames):
        pixels = np.zeros((side, side), dtype=np.uint8)
        pixels[0, 0], pixels[-1, -1] = i % 2, (i + 1) % 2
        frame = Image.fromarray(pixels, mode="P")
        frame.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        images.append(frame)
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], optimize=False)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "clothpobenchmarkboundary"
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(port: int, body: bytes, content_type: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(
            "POST", "/api/predict", body=body, headers={"Content-Type": content_type, "Host": "127.0.0.1"}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    except (ConnectionError, http.client.HTTPException):
        return 0  # the server closed the connection before the body was sent (a refusal)
    finally:
        connection.close()


def start_server(
    code: Path, tracking_uri: str, model_uri: str, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "clot_hpo.cli", "serve", "--tracking-uri", tracking_uri]
            + ["--model", model_uri, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=code,  # `python -m` puts the working directory first on the path
            start_new_session=True,
        )
    while True:
        if process.poll() is not None:
            raise SystemExit(f"clot-hpo serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return process, port
        except OSError:
            time.sleep(0.25)


def measure(pid: int, port: int, requests: list[tuple[bytes, str]]) -> dict[str, object]:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # peak RSS := current RSS
    idle = _status_kb(pid, "VmRSS")
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        statuses = list(pool.map(lambda item: post(port, *item), requests))
    seconds = time.perf_counter() - start
    time.sleep(0.5)
    peak = _status_kb(pid, "VmHWM")
    return {
        "idle_mb": round(idle / 1024, 1),
        "peak_mb": round(peak / 1024, 1),
        "rise_mb": round((peak - idle) / 1024, 1),
        "statuses": statuses,
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", help="checkout whose clot_hpo to serve (repeatable)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "page-memory-bench"))
    args = parser.parse_args()
    codes = [Path(c).resolve() for c in (args.code or [str(ROOT)])]
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)

    from tests.support.champion import register_tiny_champion

    champion = register_tiny_champion(Path(tempfile.mkdtemp(prefix="page-memory-")), epochs=0, n_per_class=4)
    gif = animated_gif(cache / "300x2000x2000.gif")
    ten_mb = os.urandom(10_000_000)
    scenarios = {
        "gif": [multipart([("anim.gif", gif)])],
        "gif x3": [multipart([(f"anim{i}.gif", gif)]) for i in range(3)],
        "6 x 16 x 10 MB": [multipart([(f"f{j}.png", ten_mb) for j in range(16)])] * 6,
        "6 x 3 x 10 MB": [multipart([(f"f{j}.png", ten_mb) for j in range(3)])] * 6,
    }
    results: dict[str, object] = {"gif_bytes": len(gif), "load": os.getloadavg()}
    for code in codes:
        measured = {}
        for name, reqs in scenarios.items():  # a fresh server each: freed memory is not reused
            process, port = start_server(code, champion.tracking_uri, champion.model_uri, cache / "serve.log")
            try:
                measured[name] = measure(process.pid, port, reqs)
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
        results[str(code)] = measured
    if len(codes) == 2:
        first, second = (results[str(c)] for c in codes)
        assert isinstance(first, dict) and isinstance(second, dict)
        results["rise_ratio_first_over_second"] = {
            name: round(first[name]["rise_mb"] / max(second[name]["rise_mb"], 0.1), 1) for name in scenarios
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
