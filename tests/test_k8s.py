"""The Kubernetes manifests of ``deploy/k8s``: a kustomize base and two overlays.

No cluster runs here, so these tests check what ``kubectl apply -k`` of ``overlays/dev`` or
``overlays/production`` and the pods would trip over: each overlay renders with ``kubectl
kustomize``, every rendered object (and every plain manifest file) is valid against the
Kubernetes OpenAPI schemas shipped by ``kubernetes-validate`` (strict: unknown fields are
errors), and the objects agree with each other, with the config they mount and with the
``Dockerfile``: probe paths and ports, non-root and read-only root filesystem, a writable spool
where the config puts it, a grace period that covers the whole shutdown, a Secret entry for
every ``env:NAME``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from sentinel.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "Dockerfile"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes minor still commonly served, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed (.ci/run installs Debian's kubernetes-client)"
)

Manifest = dict[str, Any]


# --- rendering and lookup ----------------------------------------------------------------------


def _render(overlay: str) -> list[Manifest]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    """The name of one overlay directory."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def rendered(overlay: str) -> list[Manifest]:
    """Every object ``kubectl kustomize`` renders for the overlay."""
    if KUBECTL is None:
        pytest.skip("kubectl is not installed (.ci/run installs Debian's kubernetes-client)")
    return _render(overlay)


def _one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def _sentinel_pod(objects: list[Manifest]) -> Manifest:
    spec: Manifest = _one(objects, "Deployment", "sentinel")["spec"]["template"]["spec"]
    return spec


def _sentinel_container(objects: list[Manifest]) -> Manifest:
    containers = _sentinel_pod(objects)["containers"]
    assert [c["name"] for c in containers] == ["sentinel"]
    container: Manifest = containers[0]
    return container


def _config_text(objects: list[Manifest]) -> str:
    """The ``sentinel.toml`` of the ConfigMap the Deployment mounts."""
    volumes = {v["name"]: v for v in _sentinel_pod(objects)["volumes"]}
    config_map = _one(objects, "ConfigMap", volumes["config"]["configMap"]["name"])
    text: str = config_map["data"]["sentinel.toml"]
    return text


def _secret_env(container: Manifest) -> dict[str, str]:
    """The container's variables that come from a Secret, with the Secret's name."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def _loaded_config(objects: list[Manifest], tmp_path: Path) -> Config:
    """The mounted config, loaded as ``sentinel check-config`` would with the pod's Secrets."""
    path = tmp_path / "sentinel.toml"
    path.write_text(_config_text(objects))
    env = {
        name: f"value-of-{name.lower()}-0123456789"
        for name in _secret_env(_sentinel_container(objects))
    }
    return load_config(path, env=env)


def _env_names(value: object) -> Iterator[str]:
    """The NAME of every ``"env:NAME"`` string anywhere in a parsed TOML value."""
    if isinstance(value, str) and value.startswith("env:"):
        yield value.removeprefix("env:")
    elif isinstance(value, dict):
        for item in value.values():
            yield from _env_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _env_names(item)


def _pre_stop_seconds(container: Manifest) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return int(command[1])


def _mount_of(container: Manifest, path: PurePosixPath) -> Manifest | None:
    """The volume mount that holds ``path`` (the deepest one), or None."""
    holding = [
        m for m in container["volumeMounts"] if path.is_relative_to(PurePosixPath(m["mountPath"]))
    ]
    return max(holding, key=lambda m: len(m["mountPath"]), default=None)


def _kustomization_resources(directory: Path) -> Iterator[Path]:
    """The plain manifest files a kustomization lists (directories and patches left out)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_file():
            yield path


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


# --- schemas -----------------------------------------------------------------------------------


def _assert_valid(manifest: Manifest, where: str) -> None:
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            kind, name = manifest.get("kind"), manifest.get("metadata", {}).get("name")
            pytest.fail(f"{where}: {kind}/{name} invalid for Kubernetes {version}: {error}")


@needs_kubectl
def test_rendered_objects_are_valid(rendered: list[Manifest], overlay: str) -> None:
    """Every object the overlay renders is valid against the Kubernetes schemas."""
    kinds = {o["kind"] for o in rendered}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    assert {"PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"} <= kinds
    for manifest in rendered:
        _assert_valid(manifest, f"overlays/{overlay}")


@pytest.mark.parametrize("directory", ["base", "overlays/dev", "overlays/production"])
def test_manifest_files_are_valid(directory: str) -> None:
    """Each manifest file a kustomization lists is valid on its own, kubectl or not."""
    files = list(_kustomization_resources(K8S / directory))
    assert files or directory == "overlays/production"
    for path in files:
        for manifest in yaml.safe_load_all(path.read_text()):
            _assert_valid(manifest, str(path.relative_to(K8S)))


# --- the Sentinel pod --------------------------------------------------------------------------


@needs_kubectl
def test_config_loads_with_the_pods_secrets(rendered: list[Manifest], tmp_path: Path) -> None:
    """The mounted config loads, and each env:NAME in it comes from a Secret the pod names."""
    config = _loaded_config(rendered, tmp_path)
    assert config.server.bind == "0.0.0.0:8080"
    assert config.redis is not None and config.telemetry.otlp_endpoint is not None
    needed = set(_env_names(tomllib.loads(_config_text(rendered))))
    assert needed == set(_secret_env(_sentinel_container(rendered)))


@needs_kubectl
def test_config_is_mounted_read_only_and_passed(rendered: list[Manifest]) -> None:
    """``serve --config`` names the file of the read-only ConfigMap mount."""
    container = _sentinel_container(rendered)
    args = container["args"]
    assert args[0] == "serve"
    config_path = PurePosixPath(args[args.index("--config") + 1])
    mount = _mount_of(container, config_path)
    assert mount is not None and mount["name"] == "config" and mount["readOnly"] is True
    assert config_path.name == "sentinel.toml"


@needs_kubectl
def test_probes_reach_the_bound_port(rendered: list[Manifest], tmp_path: Path) -> None:
    """Readiness is GET /readyz and liveness GET /healthz, on the port the config binds."""
    container = _sentinel_container(rendered)
    port = int(_loaded_config(rendered, tmp_path).server.bind.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = _one(rendered, "Service", "sentinel")["spec"]
    assert service["ports"][0]["port"] == 8080 and service["ports"][0]["targetPort"] == "http"


@needs_kubectl
def test_grace_period_covers_the_whole_shutdown(rendered: list[Manifest], tmp_path: Path) -> None:
    """The pod outlives preStop + shutdown_grace_s + the usage tracker's close_timeout_ms."""
    config = _loaded_config(rendered, tmp_path)
    container = _sentinel_container(rendered)
    needed = (
        _pre_stop_seconds(container)
        + config.server.shutdown_grace_s
        + config.usage.close_timeout_ms / 1000
    )
    assert _pre_stop_seconds(container) >= 5  # endpoints need a moment to drop the pod
    assert _sentinel_pod(rendered)["terminationGracePeriodSeconds"] > needed


@needs_kubectl
def test_runs_as_the_images_non_root_user(rendered: list[Manifest]) -> None:
    """Non-root as the Dockerfile's uid, no privilege escalation, no capabilities, seccomp."""
    pod = _sentinel_pod(rendered)
    user = dict(_dockerfile_instructions())["USER"]
    uid, gid = (int(part) for part in user.split(":"))
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    context = _sentinel_container(rendered)["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False
    account = _one(rendered, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False


@needs_kubectl
def test_spool_and_tmp_are_writable_volumes(rendered: list[Manifest], tmp_path: Path) -> None:
    """The config's spool_dir and /tmp lie on writable volumes, not the read-only root."""
    container = _sentinel_container(rendered)
    volumes = {v["name"]: v for v in _sentinel_pod(rendered)["volumes"]}
    spool_dir = PurePosixPath(str(_loaded_config(rendered, tmp_path).usage.spool_dir))
    for path in (spool_dir, PurePosixPath("/tmp")):
        mount = _mount_of(container, path)
        assert mount is not None, f"{path} is on the read-only root filesystem"
        assert not mount.get("readOnly", False)
        assert (
            "emptyDir" in volumes[mount["name"]]
            or "persistentVolumeClaim" in volumes[mount["name"]]
        )


@needs_kubectl
def test_every_container_has_requests_and_limits(rendered: list[Manifest]) -> None:
    """Every container of every Deployment sets CPU and memory requests and limits."""
    for deployment in (o for o in rendered if o["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for bound in ("requests", "limits"):
                assert set(container["resources"][bound]) == {"cpu", "memory"}, container["name"]
    resources = _sentinel_container(rendered)["resources"]
    assert resources["limits"]["memory"] in ("1Gi", "2Gi")  # tiktoken's encodings: ~200 MB


# --- scaling, disruption, network ----------------------------------------------------------------


@needs_kubectl
def test_autoscaler_bounds_agree_with_redis_replicas(
    rendered: list[Manifest], tmp_path: Path
) -> None:
    """[redis] replicas is at least maxReplicas, so the degraded local share never over-admits."""
    hpa = _one(rendered, "HorizontalPodAutoscaler", "sentinel")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sentinel",
    }
    metric = hpa["metrics"][0]["resource"]
    assert metric["name"] == "cpu" and metric["target"]["averageUtilization"] == 70
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    redis = _loaded_config(rendered, tmp_path).redis
    assert redis is not None and redis.replicas >= hpa["maxReplicas"]
    replicas = _one(rendered, "Deployment", "sentinel")["spec"]["replicas"]
    assert hpa["minReplicas"] <= replicas <= hpa["maxReplicas"]


@needs_kubectl
def test_disruption_budget_leaves_room_to_drain(rendered: list[Manifest]) -> None:
    """The PodDisruptionBudget keeps a replica up yet lets a node drain at minReplicas."""
    pdb = _one(rendered, "PodDisruptionBudget", "sentinel")["spec"]
    hpa = _one(rendered, "HorizontalPodAutoscaler", "sentinel")["spec"]
    labels = _one(rendered, "Deployment", "sentinel")["spec"]["template"]["metadata"]["labels"]
    assert 1 <= pdb["minAvailable"] < hpa["minReplicas"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()


@needs_kubectl
def test_network_policy_opens_what_sentinel_uses(rendered: list[Manifest], tmp_path: Path) -> None:
    """Ingress on 8080; egress to DNS, the Redis port, HTTPS and the OTLP collector's port."""
    config = _loaded_config(rendered, tmp_path)
    policy = _one(rendered, "NetworkPolicy", "sentinel")["spec"]
    labels = _one(rendered, "Deployment", "sentinel")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8080}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule.get("ports", [])}
    assert config.redis is not None and config.telemetry.otlp_endpoint is not None
    redis_port = urlsplit(config.redis.url).port or 6379
    otlp_port = urlsplit(config.telemetry.otlp_endpoint).port
    assert {53, 443, redis_port, otlp_port} <= egress_ports


@needs_kubectl
def test_redis_is_where_the_config_points(rendered: list[Manifest], tmp_path: Path) -> None:
    """dev runs the Redis its config names; production names a Redis outside the namespace."""
    redis = _loaded_config(rendered, tmp_path).redis
    assert redis is not None
    host = urlsplit(redis.url).hostname
    services = {o["metadata"]["name"] for o in rendered if o["kind"] == "Service"}
    if _one(rendered, "Deployment", "sentinel")["metadata"]["namespace"] == "sentinel-dev":
        assert host in services
    else:
        assert host not in services and "redis" not in services


# --- the dev Redis and the image -----------------------------------------------------------------


def test_dev_redis_is_ephemeral_and_non_root() -> None:
    """The dev overlay's Redis is redis:7, persists nothing and runs non-root."""
    objects = list(yaml.safe_load_all((K8S / "overlays" / "dev" / "redis.yaml").read_text()))
    pod = _one(objects, "Deployment", "redis")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "redis:7"
    assert container["args"] == ["redis-server", "--save", "", "--appendonly", "no"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert _one(objects, "Service", "redis")["spec"]["ports"][0]["port"] == 6379


def test_dockerfile_matches_the_deployment() -> None:
    """The image's user, port, spool directory and entry point are the ones the pod expects."""
    instructions = _dockerfile_instructions()
    last = dict(instructions)
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert (
        last["USER"]
        == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    )
    assert last["EXPOSE"] == str(container["ports"][0]["containerPort"])
    assert last["ENTRYPOINT"] == '["sentinel"]' and container["args"][0] == "serve"
    spool_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "spool")
    run = " ".join(arguments for keyword, arguments in instructions if keyword == "RUN")
    assert f"mkdir -p {spool_mount}/spool" in run
    assert f"chown -R {last['USER']} {spool_mount}" in run
    # The USER comes after every RUN: nothing later needs root.
    keywords = [keyword for keyword, _ in instructions]
    assert max(i for i, k in enumerate(keywords) if k == "RUN") < keywords.index("USER")


def test_base_config_spool_is_the_images_spool() -> None:
    """Base and production configs put the spool where the image and the volume have it."""
    for directory in ("base", "overlays/production"):
        raw = tomllib.loads((K8S / directory / "sentinel.toml").read_text())
        assert raw["usage"]["spool_dir"] == "/var/lib/sentinel/spool", directory
        assert raw["server"]["bind"] == "0.0.0.0:8080", directory
