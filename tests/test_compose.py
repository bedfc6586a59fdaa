"""The compose files, checked as far as a machine without a Docker engine allows:
structure, scalability, and that services start the entry points the tests start."""
import os
import re
import sys
from pathlib import Path

import yaml

from scripts.processes import api_command, delivery_command, worker_command

REPO = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_production_shape():
    services = COMPOSE["services"]
    assert {"redis", "minio", "createbucket", "api", "worker", "webhooks"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert "mc mb" in " ".join(services["createbucket"]["command"])
    assert "model-cache:/models" in services["worker"]["volumes"]


def test_worker_is_scalable():
    worker = COMPOSE["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N must work
    assert "worker@%h" in worker["command"]  # each replica gets its own Celery node name


def _module_args(argv):
    """The part after ``python -m`` in our own process commands."""
    return argv[argv.index("-m") + 1:]


def test_services_start_the_same_entry_points_as_the_tests():
    api = COMPOSE["services"]["api"]["command"]
    ours = _module_args(api_command(8000))
    assert api[:2] == ours[:2] == ["gunicorn", "api.wsgi:app"]
    worker = COMPOSE["services"]["worker"]["command"]
    assert worker[:4] == _module_args(worker_command())[:4] == ["celery", "-A", "worker.celery_app", "worker"]
    webhooks = COMPOSE["services"]["webhooks"]
    assert webhooks["command"] == _module_args(delivery_command())
    assert webhooks["build"] == COMPOSE["services"]["api"]["build"]  # no model: the API's light image


def test_dockerfiles_copy_what_exists_and_run_the_compose_commands():
    for service in ("api", "worker"):
        build = COMPOSE["services"][service]["build"]
        dockerfile = (REPO / build["context"] / build["dockerfile"]).read_text()
        assert dockerfile.startswith("#") and "FROM python:3.10-slim" in dockerfile
        copies = re.findall(r"^COPY (\S+) ", dockerfile, flags=re.M)
        for source in copies:
            assert (REPO / source).exists(), f"{build['dockerfile']} copies missing {source}"
        # Every package of this repository that the copied code imports is copied too.
        packages = {path.parent.name for path in REPO.glob("*/__init__.py")}
        imported = {name for source in copies if source.endswith("/") and source.rstrip("/") in packages
                    for path in (REPO / source).rglob("*.py")
                    for name in re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), flags=re.M)}
        missing = {f"{name}/" for name in imported & packages} - set(copies)
        assert not missing, f"{build['dockerfile']} does not copy {sorted(missing)}, which its code imports"
        cmd = re.search(r"^CMD (\[.*\])$", dockerfile, flags=re.M).group(1)
        assert yaml.safe_load(cmd) == COMPOSE["services"][service]["command"]
    worker = (REPO / "compose/worker.Dockerfile").read_text()
    assert "torch==1.13.1+cpu" in worker and "download.pytorch.org/whl/cpu" in worker
    assert "mmcv-full==1.7.1" in worker and "download.openmmlab.com/mmcv/dist/cpu/torch1.13" in worker
    api_requirements = [line for path in ("api.txt", "common.txt")
                        for line in (REPO / "requirements" / path).read_text().splitlines()
                        if line and not line.startswith("#")]
    assert not [line for line in api_requirements if re.match(r"(torch|mmcv|modelscope|openvino)", line)]
    api_copies = re.findall(r"^COPY (\S+) ", (REPO / "compose/api.Dockerfile").read_text(), flags=re.M)
    assert "worker/" not in api_copies  # the API enqueues through common/queue.py, never imports worker/
    assert "RUN python -m worker.selfcheck" in worker  # a broken stack fails the build, not a job


def test_the_worker_healthcheck_answers_for_a_live_worker_only(redis_server, tiny_model, tmp_path):
    """Run the compose healthcheck's own command against a real worker, the way
    Docker would inside its container (HOSTNAME set, ``$$`` unescaped by compose)."""
    import socket
    import subprocess

    from scripts.processes import wait_until
    from scripts.stack import Stack

    kind, command = COMPOSE["services"]["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/6", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store")}
    stack = Stack(env=env, log_dir=tmp_path)
    bin_dir = str(Path(sys.executable).parent)  # where the image has `celery` on PATH

    def healthcheck() -> int:
        return subprocess.run(["bash", "-c", command.replace("$$", "$")], cwd=REPO, capture_output=True,
                              env={**stack.process_env(), "HOSTNAME": socket.gethostname(),
                                   "PATH": f"{bin_dir}:{os.environ['PATH']}"}).returncode

    worker = stack.start_worker("worker")
    try:
        wait_until(lambda: "ready" in worker.log_text(), 120, "the worker to load its model")
        wait_until(lambda: healthcheck() == 0, 120, "the healthcheck to pass")
    finally:
        worker.stop()
    assert healthcheck() != 0


def _metric_names(*modules: str) -> set[str]:
    """The metric names the service's metric modules define (their string literals)."""
    return {name for module in modules
            for name in re.findall(r'"(m2fp_[a-z_]+)"', (REPO / module).read_text())}


def test_prometheus_scrapes_what_the_services_expose():
    from common.settings import Settings

    services = COMPOSE["services"]
    for optional in ("prometheus", "grafana"):  # only with `docker compose --profile metrics up`
        assert services[optional]["profiles"] == ["metrics"]
    config_mount = next(volume for volume in services["prometheus"]["volumes"]
                        if volume.endswith(":/etc/prometheus/prometheus.yml:ro"))
    config = yaml.safe_load((REPO / config_mount.split(":")[0]).read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}

    api = services["api"]["command"]
    api_port = api[api.index("--bind") + 1].rsplit(":", 1)[1]
    assert jobs["m2fp-api"]["static_configs"][0]["targets"] == [f"api:{api_port}"]
    assert jobs["m2fp-api"]["metrics_path"] == "/metrics"
    ours = api_command(8000)
    assert api[api.index("--config") + 1] == ours[ours.index("--config") + 1] == "python:api.gunicorn_conf"

    # Every replica of the worker, on the port its settings give it (compose leaves the default).
    worker = services["worker"]
    assert "WORKER_METRICS_PORT" not in worker["environment"]
    port = Settings().worker_metrics_port
    [discovery] = jobs["m2fp-worker"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["type"] == "A" and discovery["port"] == port
    assert worker["expose"] == [str(port)]
    assert f"EXPOSE {port}" in (REPO / "compose/worker.Dockerfile").read_text()


def test_the_dashboard_reads_metrics_the_services_define():
    import json

    dashboard = json.loads((REPO / "compose/grafana/m2fp-dashboard.json").read_text())
    datasource = yaml.safe_load((REPO / "compose/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    defined = _metric_names("api/metrics.py", "worker/metrics.py")
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            used |= {re.sub(r"_(bucket|count|sum)$", "", name) for name in re.findall(r"m2fp_[a-z_]+", target["expr"])}
    assert used and used <= defined, used - defined
    assert defined <= used, f"metrics no panel shows: {defined - used}"
    grafana = COMPOSE["services"]["grafana"]["volumes"]
    assert any(v.startswith("./compose/grafana/m2fp-dashboard.json:") for v in grafana)


def test_the_api_gets_its_keys_and_rate_so_a_compose_deployment_can_close():
    """The API's key and rate settings reach its container (else compose would always run
    open while webhooks are signed), each empty by default, and the key file's directory
    is mounted read-only."""
    from common.settings import Settings

    api = COMPOSE["services"]["api"]
    environment = api["environment"]
    for variable in ("API_KEYS", "API_KEYS_FILE", "SUBMIT_RATE_PER_MINUTE"):
        assert variable.lower() in Settings.model_fields, variable  # the names the settings read
        assert environment[variable] == f"${{{variable}:-}}", variable
    assert environment["WEBHOOK_SIGNING_KEY"] == "${WEBHOOK_SIGNING_KEY:-}"  # still there, with the shared ones
    [mount] = [volume for volume in api["volumes"] if volume.endswith(":/run/m2fp/keys:ro")]
    assert mount.startswith("${API_KEYS_DIR:-./compose/keys}:")
    assert (REPO / "compose/keys/.gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]
    for service in ("worker", "webhooks"):  # only the API checks keys
        assert "API_KEYS" not in COMPOSE["services"][service]["environment"]
