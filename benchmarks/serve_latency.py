"""Latency of the diagnostic page's API against ``clot-hpo predict``, measured in one run.

Starts ``clot-hpo serve`` on a free loopback port, posts the demo's images to
``/api/predict`` (one image per request) from several concurrent clients, and prints the
per-image latency (p50, p95, as the client sees it), images per second, and the same
images through ``clot-hpo predict`` (a fresh process: start, model load, scoring) and
through its scoring function on an already loaded model (``score_image_files``, the
steady state). ``/api/explain`` (Grad-CAM overlay as PNG) is measured on a subset.

    .venv/bin/python benchmarks/serve_latency.py                       # the demo's champion
    .venv/bin/python benchmarks/serve_latency.py --backbone resnet50   # a temporary one

Without ``--model`` it uses the demo's champion (``make demo``) when it exists, else it
registers an untrained model of ``--backbone`` at the demo's 48 px in a temporary store
(latency does not depend on the weights). Goal: p95 under 150 ms per image, no errors.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.*, when run as a script

from tests.support.mlflow_server import free_port  # noqa: E402

DEMO_URI = f"sqlite:///{ROOT / 'mlruns' / 'mlflow.db'}"
CHAMPION = "models:/blood-clot-detector@champion"
GOAL_P95_MS = 150.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def resolvable(tracking_uri: str, model_uri: str) -> bool:
    from clot_hpo.errors import ClotHpoError
    from clot_hpo.registry import resolve_model
    from clot_hpo.tracking.store import open_client

    try:
        resolve_model(open_client(tracking_uri), tracking_uri, model_uri)
        return True
    except ClotHpoError:
        return False


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "clothpobenchmarkboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, name: str, data: bytes) -> tuple[float, int, bytes]:
    body, content_type = multipart(name, data)
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        payload, status = exc.read(), exc.code
    return (time.perf_counter() - start) * 1000, status, payload


def start_server(tracking_uri: str, model_uri: str, log: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clot_hpo.cli",
                "serve",
                "--tracking-uri",
                tracking_uri,
                "--model",
                model_uri,
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"clot-hpo serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return process, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.25)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--backbone", default="tiny_cnn", help="for the temporary model (no demo champion)")
    parser.add_argument(
        "--images", default=str(ROOT / "data" / "synthetic"), help="folder of the demo's images"
    )
    parser.add_argument("--n", type=int, default=200, help="images to post")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--explain-n", type=int, default=40, help="images to post to /api/explain")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    tmp = Path(tempfile.mkdtemp(prefix="serve-latency-"))
    tracking_uri, model_uri, source = args.tracking_uri or DEMO_URI, args.model or CHAMPION, "given"
    if args.model is None and args.tracking_uri is None:
        source = "the demo's champion"
        if not resolvable(tracking_uri, model_uri):
            from tests.support.champion import register_tiny_champion

            champion = register_tiny_champion(
                tmp / "store", epochs=0, n_per_class=4, backbone=args.backbone, image_size=48
            )
            tracking_uri, model_uri = champion.tracking_uri, champion.model_uri
            source = f"a temporary {args.backbone} at 48 px (no demo champion found)"
    images_dir = Path(args.images)
    if not images_dir.is_dir():
        from clot_hpo.data.synthetic import make_synthetic

        images_dir = make_synthetic(tmp / "data", n_per_class=300, image_size=48, seed=0)
    paths = sorted(images_dir.rglob("*.png"))[: args.n]
    payloads = [(p.name, p.read_bytes()) for p in paths]

    # ----- the page's API ----------------------------------------------------------------
    process, url, startup_s = start_server(tracking_uri, model_uri, tmp / "serve.log")
    try:
        for name, data in payloads[:5]:  # warm the connection path (the model warmed itself)
            post(f"{url}/api/predict", name, data)
        latencies: list[float] = []
        server_ms: list[float] = []
        errors = 0
        lock = threading.Lock()

        def one(item: tuple[str, bytes]) -> None:
            nonlocal errors
            ms, status, payload = post(f"{url}/api/predict", *item)
            with lock:
                if status != 200:
                    errors += 1
                    return
                latencies.append(ms)
                server_ms.append(json.loads(payload)[0]["ms"])

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            list(pool.map(one, payloads))
        serve_wall = time.perf_counter() - start
        explain_ms, explain_errors = [], 0
        for name, data in payloads[: args.explain_n]:
            ms, status, _ = post(f"{url}/api/explain", name, data)
            explain_ms.append(ms)
            explain_errors += status != 200
    finally:
        stop_server(process)

    # ----- clot-hpo predict on the same images -----------------------------------------------
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "clot_hpo.cli",
            "predict",
            "--tracking-uri",
            tracking_uri,
            "--model",
            model_uri,
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    predict_wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"clot-hpo predict failed:\n{run.stderr}")
    # Its scoring alone, on a model already loaded (what a long-running predict would reach).
    from clot_hpo.evaluate.holdout import score_image_files
    from clot_hpo.registry import load_keras_model, resolve_model
    from clot_hpo.tracking.store import open_client

    resolved = resolve_model(open_client(tracking_uri), tracking_uri, model_uri)
    model = load_keras_model(tracking_uri, resolved)
    list(score_image_files(model, paths[:8], resolved.image_size))  # warm-up
    start = time.perf_counter()
    list(score_image_files(model, paths, resolved.image_size))
    scoring_wall = time.perf_counter() - start

    n = len(latencies)
    serve_ips = n / serve_wall
    result = {
        "model": model_uri,
        "model_source": source,
        "image_size": resolved.image_size,
        "images": len(paths),
        "clients": args.clients,
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "serve_startup_s": round(startup_s, 2),
        "predict_p50_ms": round(percentile(latencies, 0.5), 1),
        "predict_p95_ms": round(percentile(latencies, 0.95), 1),
        "predict_server_p50_ms": round(percentile(server_ms, 0.5), 1),
        "serve_images_per_s": round(serve_ips, 1),
        "errors": errors,
        "explain_p50_ms": round(percentile(explain_ms, 0.5), 1),
        "explain_p95_ms": round(percentile(explain_ms, 0.95), 1),
        "explain_errors": explain_errors,
        "predict_command_s": round(predict_wall, 2),
        "predict_command_images_per_s": round(len(paths) / predict_wall, 1),
        "predict_scoring_images_per_s": round(len(paths) / scoring_wall, 1),
        "ratio_serve_vs_predict_command": round(serve_ips / (len(paths) / predict_wall), 2),
        "ratio_serve_vs_predict_scoring": round(serve_ips / (len(paths) / scoring_wall), 3),
        "goal_p95_under_150_ms": percentile(latencies, 0.95) < GOAL_P95_MS and errors == 0,
    }
    print(json.dumps(result, indent=2))
    r = result
    goal = "met" if r["goal_p95_under_150_ms"] else "NOT met"
    print(
        f"\n{n} images from {args.clients} concurrent clients, one image per request: "
        f"p50 {r['predict_p50_ms']} ms, p95 {r['predict_p95_ms']} ms per image, "
        f"{serve_ips:.1f} images/s, {errors} errors (goal p95 < {GOAL_P95_MS:.0f} ms: {goal}).\n"
        f"clot-hpo predict on the same images: {predict_wall:.1f} s in all "
        f"({r['predict_command_images_per_s']} images/s, start and model load included): "
        f"the page serves {r['ratio_serve_vs_predict_command']}x that rate; predict's batch scoring "
        f"alone reaches {r['predict_scoring_images_per_s']} images/s "
        f"(ratio {r['ratio_serve_vs_predict_scoring']}: one image per request costs a request each).\n"
        f"/api/explain (Grad-CAM overlay as PNG): p50 {r['explain_p50_ms']} ms, p95 {r['explain_p95_ms']} ms."
    )


if __name__ == "__main__":
    main()
