"""The files in ``deploy/``: compose stack, collector, Prometheus, Grafana and Sentinel configs.

Docker cannot run here, so these tests check what ``docker compose up`` would trip over: every
service has an image or a build, every mounted file exists, every host name and port one file
points at is a service and a port another file defines, the collector's pipelines use only
components it defines, and every dashboard panel queries metrics Sentinel really exports.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sentinel.config import AdminConfig, KeyConfig, RedisConfig, hash_key, load_config
from tests.conftest import CLIENT_KEY, StartGateway, Upstream, make_config
from tests.support import dashboard
from tests.support.redis_server import RedisServer

DEPLOY = dashboard.DEPLOY
COMPOSE = DEPLOY / "docker-compose.yml"
COLLECTOR = DEPLOY / "otel-collector.yaml"
PROMETHEUS = DEPLOY / "prometheus.yml"
SENTINEL_TOML = DEPLOY / "sentinel.compose.toml"
EXAMPLE_TOML = DEPLOY / "sentinel.example.toml"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
COMPOSE_ENV = {
    "SENTINEL_ADMIN_TOKEN": "admin-token-0123456789",
    "SENTINEL_DEMO_KEY": "sk-demo-key-0123456789",
    "SENTINEL_LIMITED_KEY": "sk-limited-key-0123456789",
}
SENTINELS = ("sentinel-1", "sentinel-2")


def read_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: expected a mapping at the top"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml, anchors and merge keys resolved."""
    return read_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compose services by name."""
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    """otel-collector.yaml."""
    return read_yaml(COLLECTOR)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes as {container path: source}; sources are relative to deploy/."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        found[target] = source
    return found


def container_ports(service: dict[str, Any]) -> set[int]:
    """The container side of a service's published ports."""
    return {int(str(port).split(":")[-1].split("/")[0]) for port in service.get("ports", [])}


def flag(command: list[str], name: str) -> str:
    """The value of ``--name=value`` or ``--name value`` in a command list."""
    for i, arg in enumerate(command):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return command[i + 1]
    raise AssertionError(f"{name} not in {command}")


def host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


# --- docker-compose.yml ------------------------------------------------------------------------


def test_compose_has_the_whole_stack(services: dict[str, dict[str, Any]]) -> None:
    """Two Sentinel replicas, the mock upstream, Redis, the collector, Prometheus, Grafana."""
    assert set(services) == {
        *SENTINELS,
        "mock-upstream",
        "redis",
        "otel-collector",
        "prometheus",
        "grafana",
    }


def test_every_service_has_an_image_or_a_buildable_context(
    services: dict[str, dict[str, Any]],
) -> None:
    """Each service names an image or a build whose context and Dockerfile exist."""
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
        image = service.get("image", "")
        if "build" not in service:
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: pin a tag, got {image!r}"


def test_every_mounted_file_exists(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Bind mounts point at files in the repository; named volumes are declared."""
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for target, source in mounts(service).items():
            assert target.startswith("/"), f"{name}: {target}"
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} is missing"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"


def test_ports_and_dependencies_are_well_formed(services: dict[str, dict[str, Any]]) -> None:
    """Published ports are HOST:CONTAINER numbers, unique on the host; depends_on names
    services."""
    published: list[int] = []
    for name, service in services.items():
        for port in service.get("ports", []):
            host, container = str(port).split(":")
            assert 0 < int(container) < 65536, name
            published.append(int(host))
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    assert len(published) == len(set(published)), published


def test_sentinel_replicas_run_the_mounted_config(services: dict[str, dict[str, Any]]) -> None:
    """Both replicas serve the config file compose mounts, on distinct host ports."""
    for name in SENTINELS:
        service = services[name]
        config = flag(service["command"], "--config")
        assert mounts(service)[config] == "./sentinel.compose.toml", name
        assert set(COMPOSE_ENV) <= set(service["environment"]), name
        assert container_ports(service) == {8080}, name


# --- Sentinel's config -------------------------------------------------------------------------


def test_compose_config_loads_and_points_at_compose_services(
    services: dict[str, dict[str, Any]], collector: dict[str, Any]
) -> None:
    """The mounted sentinel.compose.toml loads, and every address in it is a compose service
    on the port that service listens on."""
    config = load_config(SENTINEL_TOML, env=COMPOSE_ENV)
    assert config.redis is not None
    assert urlsplit(config.redis.url).hostname == "redis"
    assert config.redis.replicas == len(SENTINELS)
    assert config.admin.token == COMPOSE_ENV["SENTINEL_ADMIN_TOKEN"]
    assert host_port(config.server.bind)[1] == 8080

    otlp = urlsplit(config.telemetry.otlp_endpoint or "")
    assert otlp.hostname in services
    protocol = "grpc" if config.telemetry.otlp_protocol == "grpc" else "http"
    receiver = collector["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
    assert otlp.port == host_port(receiver)[1]

    (upstream,) = config.upstreams
    address = urlsplit(upstream.base_url)
    mock = services[address.hostname or ""]
    assert mock["command"][0] == "mock-upstream"
    assert host_port(flag(mock["command"], "--bind"))[1] == address.port
    assert {key.name for key in config.keys} == {"demo", "demo-limited"}


def test_example_config_otlp_block_loads_when_uncommented(tmp_path: Path) -> None:
    """The commented [telemetry] settings in the example are valid as written."""
    text = EXAMPLE_TOML.read_text()
    telemetry = re.compile(
        r"^# ((?:metrics_public|otlp_endpoint|otlp_protocol|service_name|instance_id"
        r"|export_interval_ms) = )",
        re.MULTILINE,
    )
    uncommented, count = telemetry.subn(r"\1", text)
    assert count == 6
    path = tmp_path / "sentinel.toml"
    path.write_text(uncommented)
    env = {"OPENAI_API_KEY": "sk-upstream", "SENTINEL_KEY_TEAM_A": "sk-team-a-key"}
    config = load_config(path, env=env)
    assert config.telemetry.otlp_endpoint == "http://otel-collector:4318"
    assert config.telemetry.instance_id == "sentinel-1"


# --- the collector -----------------------------------------------------------------------------


def test_collector_pipelines_use_only_defined_components(collector: dict[str, Any]) -> None:
    """Each pipeline's receivers, processors and exporters are defined, and each defined one
    is used (the collector refuses to start otherwise)."""
    pipelines = collector["service"]["pipelines"]
    assert {"metrics", "traces"} <= set(pipelines)
    for kind in ("receivers", "processors", "exporters"):
        defined = set(collector.get(kind) or {})
        used = {name for pipeline in pipelines.values() for name in pipeline.get(kind, [])}
        assert used <= defined, f"{kind}: undefined {used - defined}"
        assert defined <= used, f"{kind}: unused {defined - used}"
    for pipeline in pipelines.values():
        assert pipeline["receivers"] and pipeline["exporters"]
    assert set(collector["service"].get("extensions", [])) <= set(collector.get("extensions", {}))
    assert "prometheus" in pipelines["metrics"]["exporters"]


def test_collector_runs_the_mounted_config(
    services: dict[str, dict[str, Any]], collector: dict[str, Any]
) -> None:
    """The collector container reads the mounted file and publishes the OTLP ports."""
    service = services["otel-collector"]
    assert "opentelemetry-collector-contrib" in service["image"]
    assert mounts(service)[flag(service["command"], "--config")] == "./otel-collector.yaml"
    protocols = collector["receivers"]["otlp"]["protocols"]
    ports = {host_port(p["endpoint"])[1] for p in protocols.values()}
    assert ports <= container_ports(service)


# --- Prometheus --------------------------------------------------------------------------------


def test_prometheus_scrapes_the_collectors_exporter(
    services: dict[str, dict[str, Any]], collector: dict[str, Any]
) -> None:
    """Every scrape target is a compose service on a port it serves; the collector's
    exporter is among them, with honor_labels so each replica keeps its instance label."""
    config = read_yaml(PROMETHEUS)
    service = services["prometheus"]
    assert mounts(service)[flag(service["command"], "--config.file")] == "./prometheus.yml"
    exporter_port = host_port(collector["exporters"]["prometheus"]["endpoint"])[1]
    targets = []
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = host_port(target)
                assert host in services, f"{job['job_name']}: {target}"
                targets.append((host, port, job))
    (collector_job,) = [job for host, port, job in targets if host == "otel-collector"]
    assert collector_job.get("honor_labels") is True
    assert ("otel-collector", exporter_port) in {(host, port) for host, port, _ in targets}


# --- Grafana -----------------------------------------------------------------------------------


def test_grafana_datasource_is_the_compose_prometheus(services: dict[str, dict[str, Any]]) -> None:
    """The provisioned datasource points at the prometheus service, and Grafana mounts the
    provisioning and dashboard folders the provider reads."""
    (datasource,) = read_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["uid"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert 9090 in container_ports(services["prometheus"])

    grafana = mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == "./grafana/provisioning"
    (provider,) = read_yaml(PROVISIONING / "dashboards" / "sentinel.yml")["providers"]
    assert grafana[provider["options"]["path"]] == "./grafana/dashboards"


def test_dashboard_panels_all_have_a_datasource_and_queries() -> None:
    """Every panel uses the datasource variable (defaulting to the provisioned uid) and has
    targets with a PromQL expression, unique ids and in-grid positions."""
    board = dashboard.load()
    (datasource,) = read_yaml(PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    allowed = {"${datasource}", datasource["uid"]}

    panels = list(dashboard.panels(board))
    assert len(panels) >= 20
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        title = panel["title"]
        assert panel["datasource"]["uid"] in allowed, title
        assert panel["targets"], title
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["expr"].strip(), title
            assert target.get("datasource", panel["datasource"])["uid"] in allowed, title
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, title


def test_dashboard_covers_what_on_call_needs() -> None:
    """Throughput, errors, latency and overhead, TTFT, tokens, limits, degraded mode, upstream
    health and the usage tracker each have a panel."""
    exprs = " ".join(q.expr for q in dashboard.queries(dashboard.load()))
    for needed in (
        "sentinel_requests_total",
        "histogram_quantile(0.99, sum by (le) (rate(gen_ai_client_operation_duration_seconds",
        "sentinel_gateway_overhead_seconds_bucket",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "sentinel_key, gen_ai_token_type",
        "gen_ai_request_model, gen_ai_token_type",
        'sentinel_decision="denied"',
        "sentinel_limits_degraded",
        "sentinel_upstream_requests_total",
        "sentinel_usage_queue_depth",
        "sentinel_usage_spilled_total",
    ):
        assert needed in exprs, needed


def test_dashboard_variables_are_all_declared() -> None:
    """Each expression uses only declared template variables and Grafana built-ins."""
    for query in dashboard.queries(dashboard.load()):
        assert "$" not in query.expr, query


async def test_dashboard_reads_only_metrics_sentinel_exports(
    private_redis: RedisServer, upstream: Upstream, start_gateway: StartGateway
) -> None:
    """Every metric name the dashboard selects appears on a live Sentinel's /metrics."""
    token = "admin-token-for-the-deploy-test"
    limited = "sk-limited-key-for-the-deploy-test"
    config = make_config(upstream.url)
    config = dataclasses.replace(
        config,
        keys=(*config.keys, KeyConfig(name="limited", key_sha256=hash_key(limited), rpm=1)),
        redis=RedisConfig(url=f"redis://127.0.0.1:{private_redis.port}/0", timeout_ms=1_000),
        admin=AdminConfig(token=token),
    )
    gateway = await start_gateway(config)
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    calls = [(chat, CLIENT_KEY), ({**chat, "stream": True}, CLIENT_KEY), (chat, limited)]
    async with aiohttp.ClientSession() as http:
        for body, key in [*calls, (chat, limited)]:
            headers = {"Authorization": f"Bearer {key}"}
            url = f"{gateway.base_url}/chat/completions"
            async with http.post(url, json=body, headers=headers) as response:
                await response.read()
        async with http.get(f"{gateway.url}/metrics") as refused:
            assert refused.status == 401
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{gateway.url}/metrics", headers=headers) as response:
            assert response.status == 200
            text = await response.text()
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    for query in dashboard.queries(dashboard.load()):
        names = dashboard.metric_names(query.expr)
        assert names, query
        assert names <= exported, f"{query.panel}: {names - exported} not exported"
