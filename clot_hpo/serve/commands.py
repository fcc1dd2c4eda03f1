"""The ``serve`` and ``explain`` commands, declared with their options.

``explain`` lives here rather than in :mod:`clot_hpo.explain`: it resolves a registered
model through the registry, and explain/ sits below the registry (the trial process,
beside the registry, draws its failure gallery with it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from clot_hpo.data.commands import add_dicom_options, add_image_limit_options
from clot_hpo.errors import ConfigError
from clot_hpo.registry.commands import add_model_options, dicom_for_model
from clot_hpo.util import AddCommand

log = logging.getLogger("clot_hpo.serve")


def serve_command(args: argparse.Namespace) -> int:
    """``clot-hpo serve``: load the model once, then serve the page until interrupted."""
    import uvicorn

    from clot_hpo.data.dicom import DicomSettings
    from clot_hpo.serve.app import LOOPBACK_NAMES, Limits, create_app
    from clot_hpo.serve.service import load_service

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, but got {args.port}")
    if args.host not in LOOPBACK_NAMES:
        print(
            f"clot-hpo: warning: serving on {args.host}: the page has no authentication; anyone who can "
            "reach this address can upload images and use the model",
            file=sys.stderr,
        )
    service = load_service(args.tracking_uri, args.model)  # ConfigError (exit 2) when unresolvable
    info = service.info
    dicom = dicom_for_model(DicomSettings.given_in(args), info.dicom)
    mib = 2**20
    wildcard = args.host in ("0.0.0.0", "::", "")
    limits = Limits(
        max_file_bytes=int(args.max_upload_mb * mib),
        max_files=args.max_files,
        max_request_bytes=int(args.max_request_mb * mib),
        max_pixels=args.max_pixels,
        max_concurrent_uploads=args.max_concurrent_uploads,
        max_buffered_bytes=int(args.max_buffered_mb * mib),
        trusted_hosts=(*([] if wildcard else [args.host]), *(args.trusted_hosts or [])),
        dicom=dicom,
    )
    if wildcard and not args.trusted_hosts:
        print(
            f"clot-hpo: warning: on {args.host} the page answers only requests addressed to a loopback "
            "name; add the names clients use with --trusted-host NAME (or serve.trusted_hosts)",
            file=sys.stderr,
        )
    version = f"version {info.version}" if info.version else info.run_id
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"Serving {info.uri} ({version}, {info.backbone or 'backbone unknown'}, {info.image_size} px, "
        f"threshold {info.threshold:.3f})"
    )
    print(f"Open http://{host}:{args.port}/  (Ctrl-C stops it)", flush=True)
    uvicorn.run(
        create_app(service, limits), host=args.host, port=args.port, log_level="warning", access_log=False
    )
    return 0


def explain_command(args: argparse.Namespace) -> int:
    """``clot-hpo explain``: write a Grad-CAM overlay per image, print one JSON line each.

    Lines are ``{"image", "probability", "label", "overlay"}``; the overlay is
    ``OUT/<image stem>.gradcam.png`` (a number is added when two images share a stem).
    """
    from clot_hpo.data.dicom import DicomSettings
    from clot_hpo.data.pipeline import list_images
    from clot_hpo.explain import GradCam, overlay, png_bytes
    from clot_hpo.registry.models import load_keras_model, resolve_model
    from clot_hpo.serve.images import ImageRejected, decode_image_bytes
    from clot_hpo.tracking.store import open_client

    files = list_images(args.paths)  # DataError (exit 2) names missing paths and non-images
    out = Path(args.out)
    resolved = resolve_model(open_client(args.tracking_uri), args.tracking_uri, args.model)
    dicom = dicom_for_model(DicomSettings.given_in(args), resolved.dicom)
    cam = GradCam(load_keras_model(args.tracking_uri, resolved))
    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for path in files:
        try:
            image = decode_image_bytes(
                path.read_bytes(),
                str(path),
                resolved.image_size,
                max_pixels=args.max_pixels,
                dicom=dicom,
                display=True,
            )
        except ImageRejected as exc:
            raise ConfigError(exc.message) from None
        probs, maps = cam(image.model_input[None])
        name, n = f"{path.stem}.gradcam.png", 1
        while name in used:
            n += 1
            name = f"{path.stem}-{n}.gradcam.png"
        used.add(name)
        assert image.display is not None  # asked for with display=True
        (out / name).write_bytes(png_bytes(overlay(image.display, maps[0])))
        line = {
            "image": str(path),
            "probability": round(float(probs[0]), 6),
            "label": int(probs[0] >= resolved.threshold),
            "overlay": str(out / name),
        }
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    return 0


def add_commands(add: AddCommand) -> None:
    """Declare ``serve`` and ``explain`` to the command line."""
    p = add("serve", serve_command, "the diagnostic web page (probability, decision, Grad-CAM) of a model")
    add_model_options(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: the page has no authentication)",
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--trusted-host",
        action="append",
        dest="trusted_hosts",
        metavar="NAME",
        help="a name the page answers to besides the loopback names and --host (repeatable; the Host "
        "header of any other is refused: default the config's serve.trusted_hosts)",
    )
    serve_default = "default: the config's serve.{}, else {}"
    p.add_argument(
        "--max-upload-mb",
        type=float,
        help="largest image file accepted (413); " + serve_default.format("max_upload_mb", 10),
    )
    p.add_argument(
        "--max-files", type=int, help="most images per request; " + serve_default.format("max_files", 16)
    )
    p.add_argument(
        "--max-request-mb",
        type=float,
        help="largest request body (413); " + serve_default.format("max_request_mb", 32),
    )
    p.add_argument(
        "--max-concurrent-uploads",
        type=int,
        help="request bodies received at once (503 with Retry-After past it); "
        + serve_default.format("max_concurrent_uploads", 4),
    )
    p.add_argument(
        "--max-buffered-mb",
        type=float,
        help="bytes all requests in flight may hold (503 with Retry-After past it); "
        + serve_default.format("max_buffered_mb", 128),
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        help="largest declared width x height accepted, checked before decoding (413 above; "
        "default: the config's data.max_pixels, else 50,000,000)",
    )
    add_dicom_options(p)

    p = add("explain", explain_command, "write Grad-CAM overlays of images with a registered model")
    add_model_options(p)
    p.add_argument("--out", required=True, help="folder for the overlays (<image>.gradcam.png)")
    add_image_limit_options(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")


__all__ = ["add_commands", "explain_command", "serve_command"]
