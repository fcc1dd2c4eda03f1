"""deploy/kubernetes/, checked offline: Kubernetes' schemas and the stack's rules.

Every manifest is validated against the schemas of a pinned Kubernetes version
(``kubernetes-validate``, strict: an unknown field is an error). Then the rules of
docs/kubernetes.md: the worker Job is a work queue whose podFailurePolicy ignores disruptions
and exit 75, the GPU variant differs from the CPU one only by image, GPU and resources, the
worker and prepare commands are accepted by our own CLI, every variable the product reads
comes from the ConfigMap or the Secret, passwords only through ``secretKeyRef``, images
pinned, pods non-root, data read-only, nothing published. No cluster needed (none runs here);
tests/integration/test_kubernetes_loopback.py runs the worker command itself.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from clot_hpo.config import load_config
from clot_hpo.config.defaults import STORAGE_ENV
from clot_hpo.util import redact_url
from tests.support.kubernetes import (
    KUBERNETES_VERSION,
    MANIFESTS,
    ROOT,
    SECRETS,
    SETTINGS,
    Resource,
    container_argv,
    container_env,
    containers,
    find,
    load_resources,
    manifest_files,
    pod_failure_action,
    pod_spec,
    secret_template,
    settings,
    workloads,
)

WORKER_JOBS = ("clot-hpo-workers", "clot-hpo-workers-gpu")
# Where the worker image keeps the checkout's experiments/ and search_spaces/ (Dockerfile).
IMAGE_WORKDIR = "/work"
# The variables the product reads to reach its servers, and where each must come from: the
# storage URL (clot_hpo.config.defaults.STORAGE_ENV), libpq's password for it, MLflow's login.
PRODUCT_ENV = {
    STORAGE_ENV: "configMapKeyRef",
    "PGPASSWORD": "secretKeyRef",
    "MLFLOW_TRACKING_URI": "configMapKeyRef",
    "MLFLOW_TRACKING_USERNAME": "configMapKeyRef",
    "MLFLOW_TRACKING_PASSWORD": "secretKeyRef",
}


def _repo_path(in_image: str) -> Path:
    """A config path as the worker image sees it (relative to /work), in this checkout."""
    return ROOT / Path(in_image).relative_to(IMAGE_WORKDIR) if in_image.startswith("/") else ROOT / in_image


def _walk_strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _walk_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _walk_strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_validates_against_the_kubernetes_schemas(path: Path) -> None:
    import kubernetes_validate

    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert docs, f"{path} holds no resource"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")


def test_the_stack_has_each_part() -> None:
    kinds = {(r.kind, r.name) for r in load_resources()}
    for expected in [
        ("Secret", SECRETS),
        ("ConfigMap", SETTINGS),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("PersistentVolumeClaim", "clot-hpo-mlflow-artifacts"),
        ("PersistentVolumeClaim", "clot-hpo-data"),
        ("Job", "clot-hpo-mlflow-users"),
        ("Job", "clot-hpo-prepare"),
        ("NetworkPolicy", "clot-hpo-postgres"),
        ("NetworkPolicy", "clot-hpo-mlflow"),
        *(("Job", name) for name in WORKER_JOBS),
    ]:
        assert expected in kinds, f"missing {expected}"
    postgres = find("StatefulSet", "postgres").doc["spec"]
    assert postgres["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # `kubectl apply -f deploy/kubernetes/base/` must not create the Secret from its template.
    assert find("Secret", SECRETS).path.parent == MANIFESTS


@pytest.mark.parametrize("name", WORKER_JOBS)
def test_the_worker_job_is_a_work_queue_whose_policy_ignores_preemption(name: str) -> None:
    job = find("Job", name)
    spec = job.doc["spec"]
    assert spec["parallelism"] >= 1 and "completions" not in spec, "a work queue: parallelism, no completions"
    assert spec["backoffLimit"] >= 1
    assert pod_spec(job)["restartPolicy"] == "Never", "podFailurePolicy requires restartPolicy Never"
    # What the Job controller does with each way a worker ends (exit codes: README).
    assert pod_failure_action(job, 75) == "Ignore", "exit 75 is a preemption (checkpointed, queued)"
    assert pod_failure_action(job, 143, ("DisruptionTarget",)) == "Ignore", "preemption/drain"
    assert pod_failure_action(job, 137, ("DisruptionTarget",)) == "Ignore", "node lost"
    assert pod_failure_action(job, 2) == "FailJob", "bad config: retrying cannot help"
    assert pod_failure_action(job, 1) == "Count" and pod_failure_action(job, 137) == "Count"


@pytest.mark.parametrize("name", WORKER_JOBS)
def test_termination_grace_covers_the_trials_checkpoint(name: str) -> None:
    pod = pod_spec(find("Job", name))
    config = load_config(_repo_path(settings()["STUDY_CONFIG"]))
    # The trial's grace, then the checkpoint's upload to the tracking server.
    assert pod["terminationGracePeriodSeconds"] >= config.search.preemption_grace_s + 30
    # Not PID 1: Python as PID 1 would ignore SIGTERM until its handler is installed.
    assert pod["shareProcessNamespace"] is True


def test_gpu_workers_differ_from_cpu_workers_only_by_image_gpu_and_resources() -> None:
    cpu, gpu = find("Job", "clot-hpo-workers"), find("Job", "clot-hpo-workers-gpu")
    (cpu_c,), (gpu_c,) = pod_spec(cpu)["containers"], pod_spec(gpu)["containers"]
    assert gpu_c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in str(cpu_c["resources"])
    assert cpu_c["image"].endswith("-cpu") and gpu_c["image"].endswith("-gpu")
    assert cpu_c["image"].rsplit(":", 1)[0] == gpu_c["image"].rsplit(":", 1)[0]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod_spec(gpu)["tolerations"])

    def rest(job: Resource) -> dict[str, Any]:
        spec = dict(job.doc["spec"])
        spec.pop("parallelism")
        pod = dict(spec["template"]["spec"])
        pod.pop("tolerations", None)
        pod["containers"] = [
            {k: v for k, v in c.items() if k not in ("image", "resources")} for c in pod["containers"]
        ]
        spec["template"] = {**spec["template"], "spec": pod}
        return spec

    assert rest(cpu) == rest(gpu)


def _worker_args(job_name: str, container_name: str) -> tuple[list[str], dict[str, str]]:
    job = find("Job", job_name)
    (container,) = [c for c in containers(job) if c["name"] == container_name]
    env = container_env(container, settings(), secret_template())
    return container_argv(container, env), env


@pytest.mark.parametrize(
    ("job", "container", "subcommand"),
    [
        ("clot-hpo-workers", "worker", "search"),
        ("clot-hpo-workers-gpu", "worker", "search"),
        ("clot-hpo-prepare", "prepare", "prepare-study"),
    ],
)
def test_the_pod_command_and_every_flag_are_accepted_by_our_cli(
    job: str, container: str, subcommand: str
) -> None:
    from clot_hpo.cli import build_parser

    argv, env = _worker_args(job, container)
    assert argv[0] == "clot-hpo", "the console script (the image's entrypoint)"
    assert not any("$(" in part for part in argv), f"an undefined $(VAR) stays literal: {argv}"
    args = build_parser().parse_args(argv[1:])  # an unknown flag exits 2 here
    assert args.command == subcommand
    assert args.study_name == settings()["STUDY_NAME"]
    assert args.tracking_uri == settings()["MLFLOW_TRACKING_URI"]
    assert args.storage is None and env[STORAGE_ENV] == settings()["CLOT_HPO_STORAGE"]
    if subcommand == "search":
        assert args.n_trials == int(settings()["N_TRIALS"])
    # The config the ConfigMap names exists in the image and loads with the pod's overrides.
    config = load_config(
        _repo_path(args.config),
        {"search.study_name": args.study_name, "search.storage": env[STORAGE_ENV], "data.path": args.data},
    )
    assert config.study_name == settings()["STUDY_NAME"]
    assert config.search.storage.startswith("postgresql+psycopg2://")
    # --data is where the data volume is mounted, read-only.
    (pod_container,) = [c for c in containers(find("Job", job)) if c["name"] == container]
    mounts = {m["mountPath"]: m for m in pod_container["volumeMounts"]}
    assert mounts[args.data]["readOnly"] is True


def test_the_prepare_job_and_the_workers_share_the_study_settings() -> None:
    prepare_args, prepare_env = _worker_args("clot-hpo-prepare", "prepare")
    worker_args, worker_env = _worker_args("clot-hpo-workers", "worker")
    for var in PRODUCT_ENV:
        assert prepare_env[var] == worker_env[var], var
    assert prepare_args[2] == worker_args[2], "the same experiment config"


def test_every_variable_the_product_reads_comes_from_the_configmap_or_the_secret() -> None:
    config_keys, secret_keys = set(settings()), set(secret_template())
    for job in ("clot-hpo-prepare", *WORKER_JOBS):
        for container in containers(find("Job", job)):
            sources = {e["name"]: e.get("valueFrom", {}) for e in container["env"]}
            for var, source in PRODUCT_ENV.items():
                assert source in sources.get(var, {}), f"{job}: {var} must be set from a {source}"
    for resource in workloads():
        for container in containers(resource):
            for item in container.get("env", []):
                ref = item.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    assert ref["configMapKeyRef"]["key"] in config_keys, (resource.name, item)
                if "secretKeyRef" in ref:
                    assert ref["secretKeyRef"]["key"] in secret_keys, (resource.name, item)


_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$", re.IGNORECASE)


def test_passwords_only_through_secret_key_refs() -> None:
    placeholders = set(secret_template().values())
    assert all(v.startswith("change-me") for v in placeholders), "the template holds placeholders only"
    ignored = (ROOT / ".gitignore").read_text()
    assert "/deploy/kubernetes/secret.yaml" in ignored, "a filled copy of the template stays out of git"
    for resource in load_resources():
        if resource.kind == "Secret":
            continue
        strings = _walk_strings(resource.doc)
        for text in strings:
            assert redact_url(text) == text, f"{resource.name}: a URL with a password: {text!r}"
            assert not any(p in text for p in placeholders), f"{resource.name}: a secret value inline"
        if resource.kind not in ("Job", "Deployment", "StatefulSet"):
            continue
        spec = pod_spec(resource)
        assert not any("secret" in v for v in spec.get("volumes", [])), "secrets as files: no"
        for container in containers(resource):
            assert "envFrom" not in container, f"{resource.name}: envFrom would expose every key"
            for item in container.get("env", []):
                if _SECRET_NAME.search(item["name"]):
                    assert "secretKeyRef" in item.get("valueFrom", {}), f"{resource.name}: {item['name']}"
            argv = " ".join(str(a) for a in [*container.get("command", []), *container.get("args", [])])
            assert not re.search(r"\$\([A-Z_]*(PASSWORD|SECRET)[A-Z_]*\)", argv), (
                f"{resource.name}: a secret on the command line (`ps` shows it)"
            )


def test_images_are_pinned_by_tag() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    mlflow_version = re.search(
        r"ARG MLFLOW_VERSION=(\S+)", (ROOT / "docker" / "mlflow.Dockerfile").read_text()
    )
    assert mlflow_version is not None
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for resource in workloads():
        for container in containers(resource):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and "@" not in tag, f"{resource.name}: {image}"
            if "clot-hpo-worker" in name:
                assert tag in (f"{version}-cpu", f"{version}-gpu"), f"{image}: tag = package version"
            if "clot-hpo-mlflow" in name:
                assert tag == mlflow_version.group(1), "the server's MLflow = the clients' (Dockerfile)"
            if name.endswith("postgres"):
                assert image == compose["services"]["postgres"]["image"], "the database of compose"


def test_pods_run_as_non_root_with_least_privilege() -> None:
    for resource in workloads():
        spec = pod_spec(resource)
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] != 0, resource.name
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False, f"{resource.name}: no API access needed"
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), resource.name
        for container in containers(resource):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, resource.name
            assert sc["readOnlyRootFilesystem"] is True, resource.name
            assert sc["capabilities"]["drop"] == ["ALL"], resource.name
            assert not any("hostPort" in p for p in container.get("ports", [])), resource.name


def test_every_container_has_resource_requests_and_limits() -> None:
    for resource in workloads():
        for container in containers(resource):
            res = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[kind]), f"{resource.name}: {kind}"


def test_the_data_volume_is_mounted_read_only_everywhere() -> None:
    users = 0
    for resource in workloads():
        volumes = {v["name"]: v for v in pod_spec(resource).get("volumes", [])}
        for container in containers(resource):
            for mount in container.get("volumeMounts", []):
                claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim", {})
                if claim.get("claimName") == "clot-hpo-data":
                    users += 1
                    assert mount["readOnly"] is True and claim["readOnly"] is True, resource.name
    assert users == 3, "the prepare Job and both worker Jobs mount the data"


def test_nothing_is_published_outside_the_namespace() -> None:
    for resource in load_resources():
        assert resource.kind not in ("Ingress", "Route"), resource.name
        if resource.kind == "Service":
            assert resource.doc["spec"].get("type", "ClusterIP") == "ClusterIP", resource.name


def test_network_policies_admit_only_the_stacks_own_clients() -> None:
    """PostgreSQL and MLflow accept connections only from the pods that need them."""

    def admitted(policy: Resource) -> tuple[set[str], list[int]]:
        (rule,) = policy.doc["spec"]["ingress"]
        (source,) = rule["from"]
        (components,) = [
            e for e in source["podSelector"]["matchExpressions"] if e["key"] == "app.kubernetes.io/component"
        ]
        return set(components["values"]), [p["port"] for p in rule["ports"]]

    def component(resource: Resource) -> str:
        return str(resource.doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])

    postgres, mlflow = find("NetworkPolicy", "clot-hpo-postgres"), find("NetworkPolicy", "clot-hpo-mlflow")
    users_of_db = {component(r) for r in workloads() if "PGPASSWORD" in str(r.doc) and r.name != "postgres"}
    assert admitted(postgres) == (users_of_db, [5432]) == ({"mlflow", "prepare", "worker"}, [5432])
    trackers = {
        component(r)
        for r in workloads()
        for c in containers(r)
        if any(e["name"] == "MLFLOW_TRACKING_URI" for e in c.get("env", []))
    }
    assert admitted(mlflow) == (trackers, [5000]) == ({"mlflow-users", "prepare", "worker"}, [5000])
    for policy, target in ((postgres, "postgres"), (mlflow, "mlflow")):
        assert policy.doc["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == target


def test_the_postgres_init_script_is_docker_initdb_sh() -> None:
    script = find("ConfigMap", "clot-hpo-postgres-init").doc["data"]["10-clot-hpo.sh"]
    assert script == (ROOT / "docker" / "initdb.sh").read_text(encoding="utf-8")


def test_the_mlflow_server_is_the_compose_stacks() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["mlflow"]
    (container,) = containers(find("Deployment", "mlflow"))
    args = [str(a) for a in container["args"]]
    compose_args = [str(a) for a in compose["command"]]
    for flag in ("--app-name", "--serve-artifacts", "--artifacts-destination", "--workers", "--port"):
        assert flag in args
        i, j = args.index(flag), compose_args.index(flag)
        assert args[i : i + 2] == compose_args[j : j + 2] or flag == "--serve-artifacts", flag
    env = container_env(container, settings(), secret_template())
    assert set(compose["environment"]) <= set(env), "every variable compose gives the server"
    assert redact_url(env["MLFLOW_AUTH_DATABASE_URI"]) == env["MLFLOW_AUTH_DATABASE_URI"]
    users = next(iter(containers(find("Job", "clot-hpo-mlflow-users"))))
    compose_users = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["mlflow-users"]
    # The workers' login and the promotion lock model that only the admin may take (issue 20).
    assert users["command"][-1] == "/usr/local/lib/clot-hpo/mlflow_users.py"
    assert users["args"] == compose_users["command"] == ["ensure"]
    # The same logins as compose: the admin and the workers' user names.
    assert settings()["MLFLOW_ADMIN_USER"] == "admin" and settings()["MLFLOW_WORKER_USER"] == "worker"
