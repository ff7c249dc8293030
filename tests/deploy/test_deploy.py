"""The deployment files: image, compose stack and Helm chart, validated offline.

Every validator is installed by `bash deploy/check.sh install` (into ~/.cache/greenchannel/tools); these tests
run deploy/check.sh with installation disabled and fail, never skip, when a tool is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from gateway.config import ObservabilitySettings, load_settings
from tests.deploy.catalogue import DEPLOY, ROOT, tool

pytestmark = pytest.mark.deploy  # the validators of `deploy/check.sh install`

CHART = DEPLOY / "helm" / "greenchannel"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def _run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GREENCHANNEL_NO_INSTALL": "1"}
    return subprocess.run(
        [str(a) for a in args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


# --------------------------------------------------------------------------- deploy/check.sh
@pytest.mark.timeout(900)
@pytest.mark.parametrize("check", ["prometheus", "dashboard", "docker", "compose", "helm"])
def test_check_sh(check: str) -> None:
    result = _run("bash", DEPLOY / "check.sh", check)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_sh_fails_on_a_broken_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /tmp && pip install greenchannel\n", "utf-8")
    result = _run(tool("hadolint"), bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest`


# ---------------------------------------------------------------------------------- image
def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text("utf-8").replace("\\\n", " ")
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_contract() -> None:
    ins = _instructions()
    args = {k: v for k, v in (rest.partition("=")[::2] for word, rest in ins if word == "ARG")}
    froms = [rest for word, rest in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    assert args["VERSION"] == version, "ARG VERSION must follow pyproject.toml"
    last = {word: rest for word, rest in ins}
    uid = args["UID"]
    assert last["USER"] == "${UID}:${UID}" and uid.isdigit() and int(uid) >= 10000
    assert json.loads(last["ENTRYPOINT"]) == ["greenchannel"]
    assert json.loads(last["CMD"]) == ["run"]
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert last["EXPOSE"] == str(ObservabilitySettings().port)
    assert "/healthz" in last["HEALTHCHECK"]
    assert any(w == "RUN" and "pip install --no-index" in r for w, r in ins)
    secrets = re.compile(r"(SECRET|PASSWORD|TOKEN|API_KEY)", re.I)
    assert not [r for w, r in ins if w in ("ENV", "ARG") and secrets.search(r)]


def _docker_context() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "docker_context", DEPLOY / "validate/docker_context.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dockerignore_sends_only_the_build_inputs() -> None:
    ctx = _docker_context()
    lines = (ROOT / ".dockerignore").read_text("utf-8").splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.startswith("#")]
    copied = ctx.build_stage_sources(DOCKERFILE)
    assert {"pyproject.toml", "gateway/", "connectors/", "schemas/"} <= set(copied)
    for source in copied:
        assert not ctx.ignored(source.rstrip("/"), patterns), f"{source} is excluded"
    assert not ctx.ignored("gateway/defaults/config.yaml", patterns)
    for path in [
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "var/kafka/x",
        ".cache/tools/bin/helm",
        "deploy/check.sh",
        "gateway/__pycache__/cli.cpython-311.pyc",
        ".env",
    ]:
        assert ctx.ignored(path, patterns), f"{path} would be sent to the Docker daemon"


# -------------------------------------------------------------------------------- compose
@cache
def _compose() -> dict[str, Any]:
    result = _run(tool("composecheck"), DEPLOY / "docker-compose.yml", timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def test_compose_stack() -> None:
    services = _compose()["services"]
    assert {"kafka", "topics", "bureaus", "gateway", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    gateway = services["gateway"]
    assert gateway["command"][0] == "run"
    assert gateway["environment"]["GREENCHANNEL_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert gateway["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["bureaus"]["command"] == ["bureaus"]
    assert services["topics"]["command"] == ["topics", "init"]
    assert gateway["build"]["dockerfile"].endswith("deploy/docker/Dockerfile")


def test_compose_mounts_the_rules_and_the_dashboard() -> None:
    services = _compose()["services"]
    prom = {v["target"]: v["source"] for v in services["prometheus"]["volumes"]}
    assert Path(prom["/etc/prometheus"]) == DEPLOY / "prometheus"
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text("utf-8"))
    assert set(config["rule_files"]) == {"rules.yml", "alerts.yml"}
    (target,) = config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert target == "gateway:9308"
    graf = {v["target"]: v["source"] for v in services["grafana"]["volumes"] if v["type"] == "bind"}
    assert Path(graf["/etc/grafana/provisioning"]) == DEPLOY / "grafana/provisioning"
    assert any(Path(s) == DEPLOY / "grafana/greenchannel-dashboard.json" for s in graf.values())


# ----------------------------------------------------------------------------------- helm
@cache
def _render(*args: str) -> tuple[dict[str, Any], ...]:
    result = _run(
        tool("helm"), "template", "gc", CHART, "--kube-version", "1.30.0", *args, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(d for d in yaml.safe_load_all(result.stdout) if d)


def _kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_helm_statefulset_contract() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text("utf-8"))
    docs = _render()
    sts = _kind(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] > values["shutdownTimeoutSeconds"] + 5
    assert container["args"][:3] == [
        "run",
        "--shutdown-timeout",
        str(values["shutdownTimeoutSeconds"]),
    ]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e for e in container["env"]}
    assert env["GREENCHANNEL_INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert "checksum/config" in sts["spec"]["template"]["metadata"]["annotations"]
    assert pod["automountServiceAccountToken"] is False
    assert _kind(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "PrometheusRule")]


def test_helm_pod_index_instance_and_city_subset() -> None:
    sts = _kind(_render("-f", str(CHART / "ci/deliver-values.yaml")), "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "deliver",
        "--shutdown-timeout",
        "40",
        "--city",
        "wuhu",
        "--city",
        "hefei",
        "--city",
        "nanjing",
    ]
    env = {e["name"]: e for e in container["env"]}
    field = env["GREENCHANNEL_INSTANCE"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"


def test_helm_config_loads_with_the_gateway_settings(tmp_path: Path) -> None:
    docs = _render("-f", str(CHART / "ci/production-values.yaml"))
    config = tmp_path / "config.yaml"
    config.write_text(_kind(docs, "ConfigMap")["data"]["config.yaml"], "utf-8")
    settings = load_settings(config)
    assert settings.observability.host == "0.0.0.0"
    sts = _kind(docs, "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    for key, city in settings.cities.items():
        assert city.credentials.secret is None, f"{key}: development secret left in place"
        assert city.credentials.secret_file is not None
        assert str(city.credentials.secret_file.parent) in mounts
    env = {e["name"] for e in container["env"]}
    assert "GREENCHANNEL_KAFKA__SASL_PASSWORD" in env


def test_helm_prometheus_rule_is_the_rules_of_deploy_prometheus() -> None:
    for name in ("alerts.yml", "rules.yml"):
        assert (CHART / "files" / name).read_bytes() == (DEPLOY / "prometheus" / name).read_bytes()
    docs = _render("-f", str(CHART / "ci/production-values.yaml"))
    groups = _kind(docs, "PrometheusRule")["spec"]["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert all(
        r["annotations"]["runbook_url"].startswith("https://wiki.example.com/") for r in alerts
    )
    sla = [
        r
        for g in groups
        for r in g["rules"]
        if r.get("record") == "city:greenchannel_sla_seconds:configured"
    ]
    assert sla == [
        {
            "record": "city:greenchannel_sla_seconds:configured",
            "expr": "vector(1800)",
            "labels": {"city": "shenzhen"},
        }
    ]
    monitor = _kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "ops"


def test_helm_refuses_a_grace_period_shorter_than_the_drain() -> None:
    result = _run(
        tool("helm"),
        "template",
        "gc",
        CHART,
        "--kube-version",
        "1.30.0",
        "--set",
        "terminationGracePeriodSeconds=20",
        timeout=120,
    )
    assert result.returncode != 0
    assert "terminationGracePeriodSeconds" in result.stderr
