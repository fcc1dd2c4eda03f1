"""The Kubernetes manifests under deploy/kubernetes/, read the way a cluster reads them.

No cluster and no kubectl here: the manifests are plain YAML (no overlays to render), so a
"rendered" resource is the parsed document. What the kubelet does to a container before it
starts is reproduced for the tests: the environment from ``env`` (``value``,
``configMapKeyRef``, ``secretKeyRef``) and the ``$(VAR)`` references in ``command``/``args``
expanded from it. :func:`pod_failure_action` is the Job controller's reading of a
``podFailurePolicy`` for one terminated container.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
SECRET_TEMPLATE = MANIFESTS / "secret.template.yaml"
# The Kubernetes version whose schemas the manifests must satisfy (kubernetes-validate's bundled
# schemas, pinned with the package in requirements.txt).
KUBERNETES_VERSION = "1.34.0"
SETTINGS = "clot-hpo-settings"
SECRETS = "clot-hpo-secrets"


@dataclass(frozen=True)
class Resource:
    """One document of one manifest file."""

    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc["kind"])

    @property
    def name(self) -> str:
        return str(self.doc["metadata"]["name"])


def manifest_files() -> list[Path]:
    """Every manifest, the Secret template included."""
    return sorted(MANIFESTS.rglob("*.yaml"))


def load_resources() -> list[Resource]:
    """Every resource of every manifest file."""
    return [
        Resource(path, doc)
        for path in manifest_files()
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    ]


def find(kind: str, name: str) -> Resource:
    """The one resource of ``kind`` named ``name``."""
    found = [r for r in load_resources() if r.kind == kind and r.name == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def settings() -> dict[str, str]:
    """The ConfigMap every pod reads its settings from."""
    return {k: str(v) for k, v in find("ConfigMap", SETTINGS).doc["data"].items()}


def secret_template() -> dict[str, str]:
    """The Secret template's keys and placeholder values."""
    return {k: str(v) for k, v in find("Secret", SECRETS).doc["stringData"].items()}


def pod_spec(resource: Resource) -> dict[str, Any]:
    """The pod template's spec of a Job, Deployment or StatefulSet."""
    return dict(resource.doc["spec"]["template"]["spec"])


def containers(resource: Resource) -> Iterator[dict[str, Any]]:
    """Every container (init containers too) of a workload."""
    spec = pod_spec(resource)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def workloads() -> list[Resource]:
    """Resources that run pods."""
    return [r for r in load_resources() if r.kind in ("Job", "Deployment", "StatefulSet", "Pod")]


def container_env(
    container: Mapping[str, Any], config: Mapping[str, str], secrets: Mapping[str, str]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it from ``env``.

    Raises:
        KeyError: a ConfigMap or Secret key the container names does not exist.
    """
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(str(item["value"]), env)
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            assert ref["configMapKeyRef"]["name"] == SETTINGS, ref
            env[item["name"]] = config[ref["configMapKeyRef"]["key"]]
        elif "secretKeyRef" in ref:
            assert ref["secretKeyRef"]["name"] == SECRETS, ref
            env[item["name"]] = secrets[ref["secretKeyRef"]["key"]]
        else:
            raise AssertionError(f"unexpected env source {ref}")
    return env


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a defined variable is replaced, ``$$`` is ``$``, the rest stays."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(repl, text)


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded, as the container's process gets them."""
    return [expand(str(part), env) for part in [*container.get("command", []), *container.get("args", [])]]


def pod_failure_action(job: Resource, exit_code: int | None, conditions: tuple[str, ...] = ()) -> str:
    """What the Job controller does with a failed pod: ``Ignore``, ``FailJob``, ``FailIndex`` or ``Count``.

    ``exit_code`` is the container's (a signal N is 128 + N, as the kubelet reports it);
    ``conditions`` the pod's condition types (``DisruptionTarget`` on preemption or eviction).
    The first matching rule wins; none matching counts against ``backoffLimit``.
    """
    containers_ = [c["name"] for c in pod_spec(job)["containers"]]
    for rule in job.doc["spec"].get("podFailurePolicy", {}).get("rules", []):
        if "onPodConditions" in rule:
            if any(
                p["type"] in conditions and p.get("status", "True") == "True" for p in rule["onPodConditions"]
            ):
                return str(rule["action"])
            continue
        codes = rule["onExitCodes"]
        if codes.get("containerName", containers_[0]) != containers_[0] or exit_code is None:
            continue
        inside = exit_code in codes["values"]
        if inside == (codes["operator"] == "In"):
            return str(rule["action"])
    return "Count"
