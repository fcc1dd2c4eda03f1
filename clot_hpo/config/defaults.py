"""What a command was not given on its command line: the one place that fills it from the config.

Flags always win; then, for the Optuna storage only, ``$CLOT_HPO_STORAGE``; then the
``--config`` file's value; then the schema's default (never restated here: an absent config
is the schema's defaults, ``ExperimentConfig``'s sections built empty).
"""

from __future__ import annotations

import argparse
import os

from clot_hpo.errors import ConfigError

STORAGE_ENV = "CLOT_HPO_STORAGE"
"""The Optuna storage URL from the environment: credentials never on the command line, where
``ps`` shows them to every user of the machine. ``--storage`` wins; the YAML's value comes last."""

# The commands whose unset flags come from the config's (or the schema's) sections here;
# search, prepare-study and validate-data apply their flags as overrides of the YAML instead.
CONFIG_DEFAULTED = ("promote", "predict", "evaluate", "serve", "explain", "report")


def storage_from_env(flag: str | None) -> str | None:
    """``--storage`` if given, else ``$CLOT_HPO_STORAGE``, else ``None`` (the config decides)."""
    return flag or os.environ.get(STORAGE_ENV) or None


def apply_config_defaults(args: argparse.Namespace) -> None:
    """Fill what the model and study commands were not given, from ``--config`` or the schema.

    The config's ``tracking`` section (``uri``, ``model_name``, ``experiment`` or the study
    name) is what the search used, so the same file finds the same model; ``data`` gives the
    pixel limit and the DICOM window and frame, ``serve`` the page's limits, ``search`` the
    storage ``promote`` checks the trials against. Flags given on the command line always win.

    Raises:
        ConfigError: the config is invalid, or ``promote`` has neither ``--experiment`` nor
            ``--config``.
    """
    if args.command not in CONFIG_DEFAULTED:
        return
    from clot_hpo.config.loader import load_config
    from clot_hpo.config.schema import ExperimentConfig

    path = getattr(args, "config", None)
    config = load_config(path) if path else ExperimentConfig()  # no file: the schema's defaults
    defaults = {
        "tracking_uri": config.tracking.uri,
        "max_pixels": config.data.max_pixels,
        "dicom_window": config.data.dicom.window,
        "dicom_frame": config.data.dicom.frame,
        "model": f"models:/{config.tracking.model_name}@champion",
        "model_name": config.tracking.model_name,
        "storage": storage_from_env(None) or config.search.storage,
        **{key: getattr(config.serve, key) for key in type(config.serve).model_fields},
    }
    for key, value in defaults.items():
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, value)
    if args.command == "promote" and args.experiment is None:
        if not path:
            raise ConfigError("promote needs --experiment (the study name) or --config")
        args.experiment = config.tracking.experiment or config.study_name


__all__ = ["CONFIG_DEFAULTED", "STORAGE_ENV", "apply_config_defaults", "storage_from_env"]
