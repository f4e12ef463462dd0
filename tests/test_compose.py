"""docker-compose.yml: Compose itself validates it (``config -q``, no engine needed), and the
deployment's promises are checked structurally: a GPU worker on queue ``gpu`` with an NVIDIA
reservation, health checks everywhere, one set of shared secrets for every Airflow process."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
AIRFLOW_SERVICES = {
    "airflow-init", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker-cpu", "airflow-worker-gpu",
}
#: Variables every Airflow process must share (DESIGN.md §7).
SHARED_ENV = (
    "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND", "AIRFLOW__CORE__EXECUTOR",
)


def compose_command() -> list[str]:
    """``docker compose`` (v2 plugin) if present, else the standalone ``docker-compose``."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 check=False).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    assert standalone, (
        "neither `docker compose` nor `docker-compose` is installed: run scripts/test-prereqs.sh"
    )
    return [standalone]


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*compose_command(), "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # anchors and << merges resolved by PyYAML


@pytest.fixture(scope="module")
def rendered() -> dict:
    proc = run_compose("config")
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _option(cmd: list[str], *names: str) -> str | None:
    for i, token in enumerate(cmd[:-1]):
        if token in names:
            return cmd[i + 1]
    return None


def test_compose_config_is_valid():
    proc = run_compose("config", "-q")
    assert proc.returncode == 0, f"compose config failed:\n{proc.stderr}"


def test_missing_secrets_are_refused(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = run_compose("config", "-q", env_file=empty)
    assert proc.returncode != 0
    assert "FERNET_KEY" in proc.stderr or "must be set" in proc.stderr or "set " in proc.stderr


def test_all_services_present(raw):
    assert AIRFLOW_SERVICES | {"postgres", "redis", "seaweedfs"} <= set(raw["services"])
    assert "x-airflow-common" in raw


def test_every_long_running_service_has_a_healthcheck(raw):
    for name, service in raw["services"].items():
        if service.get("restart") == "no":  # one-shot jobs (airflow-init)
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        assert not service["healthcheck"].get("disable"), name


def test_gpu_worker_consumes_only_gpu_queue_with_nvidia_reservation(raw, rendered):
    gpu = raw["services"]["airflow-worker-gpu"]
    cmd = _command(gpu)
    assert cmd[:2] == ["celery", "worker"]
    assert _option(cmd, "--queues", "-q") == "gpu"
    assert _option(cmd, "--celery-hostname", "-H").startswith("gpu@")
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert gpu["build"]["args"]["TORCH_VARIANT"] == "cuda"
    gpu_env = rendered["services"]["airflow-worker-gpu"]["environment"]
    assert gpu_env["BLOODNET_WORKER_NAME"] == "gpu"


def test_cpu_worker_consumes_default_queue_without_gpu(raw):
    cpu = raw["services"]["airflow-worker-cpu"]
    cmd = _command(cpu)
    assert _option(cmd, "--queues", "-q") == "default"
    assert _option(cmd, "--celery-hostname", "-H").startswith("cpu@")
    assert "deploy" not in cpu
    assert raw["x-airflow-common"]["environment"]["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "default"


def test_airflow_processes_share_secrets_and_execution_api(raw, rendered):
    services = rendered["services"]
    for key in SHARED_ENV:
        values = {services[name]["environment"][key] for name in AIRFLOW_SERVICES}
        assert len(values) == 1, f"{key} differs between Airflow services: {values}"
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    # Secrets come from .env, never literals in the compose file.
    common = raw["x-airflow-common"]["environment"]
    for key in ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET"):
        assert common[key].startswith("${"), key


def test_airflow_processes_wait_for_init_and_init_sets_up_pool(raw):
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        dep = raw["services"][name]["depends_on"]
        assert dep["airflow-init"]["condition"] == "service_completed_successfully", name
        assert dep["postgres"]["condition"] == "service_healthy", name
    commands = {name: _command(raw["services"][name]) for name in AIRFLOW_SERVICES}
    assert commands["airflow-scheduler"] == ["scheduler"]
    assert commands["airflow-dag-processor"] == ["dag-processor"]
    assert commands["airflow-triggerer"] == ["triggerer"]
    assert commands["airflow-api-server"][0] == "api-server"
    init_script = ROOT / "docker" / "airflow-init.sh"
    assert commands["airflow-init"] == [f"/opt/bloodnet/{init_script.relative_to(ROOT)}"]
    text = init_script.read_text()
    assert "airflow db migrate" in text
    assert re.search(r"airflow pools set gpu ", text)
    assert "bloodnet_s3" in text and "bloodnet_db" in text


def test_required_variables_are_documented_in_env_example():
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    assert required, "expected required (${VAR:?}) variables in the compose file"
    documented = {
        line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    assert required <= documented, f"missing in .env.example: {sorted(required - documented)}"


def test_images_build_from_the_project_dockerfile(raw):
    dockerfile = ROOT / raw["x-airflow-common"]["build"]["dockerfile"]
    text = dockerfile.read_text()
    for arg in ("TORCH_VARIANT", "TORCH_INDEX", "EXTRAS"):
        assert f"ARG {arg}" in text
    assert "constraints.txt" in text
    gpu_build = raw["services"]["airflow-worker-gpu"]["build"]
    assert gpu_build["dockerfile"] == raw["x-airflow-common"]["build"]["dockerfile"]
    assert raw["services"]["airflow-worker-gpu"]["image"] != raw["x-airflow-common"]["image"]


def test_kubernetes_gpu_pod_template_requests_a_gpu():
    template = ROOT / "docker" / "k8s" / "gpu-pod-template.yaml"
    pod = yaml.safe_load(template.read_text())
    assert pod["kind"] == "Pod"
    (base,) = [c for c in pod["spec"]["containers"] if c["name"] == "base"]
    assert int(base["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    # The image ships it where docs/deployment.md tells the DAG to find it.
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "/opt/airflow/pod_templates/gpu-pod-template.yaml" in dockerfile
    assert "/opt/airflow/pod_templates/gpu-pod-template.yaml" in (
        ROOT / "docs" / "deployment.md"
    ).read_text()
