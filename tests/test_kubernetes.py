"""The Kubernetes manifests (deploy/), checked offline: rendered by kubectl's own kustomize,
every standard object against Kubernetes' schemas (kubernetes-validate --strict), every
ScaledObject against KEDA's published CRD, and the values that must agree with the code
(the key KEDA counts, the queues, the CPUs and threads, the grace) against the code."""
from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from api.app import create_app
from common.celery_factory import create_celery, queue_names
from common.queue import JobQueue
from common.services import Services
from common.settings import PROCESS_MEMORY_MB, Settings
from m2fp_contract.schema import Priority
from scripts.imagegen import photo_jpeg
from scripts.processes import REPO, free_port, wait_until
from scripts.stack import Stack
from tests.harness import HARNESS_APP, HOLD_FILE_VARIABLE
from tests.test_worker_faults import holding_pids

BIN = Path(sys.executable).parent
OVERLAYS = ["production", "single-node"]
STANDARD_KINDS = {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}
# KEDA's redis scaler counts a key with this script (pkg/scalers/redis_scaler.go, v2.20.2).
KEDA_COUNT = """
local listName = KEYS[1]
local listType = redis.call('type', listName).ok
if listType == 'zset' then
    return redis.call('zcard', listName)
elseif listType == 'set' then
    return redis.call('scard', listName)
elseif listType == 'hash' then
    return redis.call('hlen', listName)
elseif listType == 'list' or listType == 'none' then
    return redis.call('llen', listName)
else
    return redis.error_reply('ERR unsupported key type: ' .. listType)
end
"""


def render(overlay: str) -> list[dict]:
    out = subprocess.run([str(BIN / "kubectl"), "kustomize", str(REPO / "deploy" / "overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request) -> list[dict]:
    return render(request.param)


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def validate_standard(objects: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "standard.yaml"
    path.write_text(yaml.safe_dump_all([o for o in objects if o["kind"] in STANDARD_KINDS]))
    return subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--no-warn", str(path)],
                          capture_output=True, text=True)


def test_every_standard_object_passes_kubernetes_strict_validation(objects, tmp_path):
    assert {o["kind"] for o in objects} <= STANDARD_KINDS | {"ScaledObject"}
    result = validate_standard(objects, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator is strict: a misspelt field (a grace period that would be silently
    # dropped) fails it.
    broken = copy.deepcopy(objects)
    by_kind(broken, "Deployment")["m2fp-worker-interactive"]["spec"]["template"]["spec"][
        "terminationGracePeriod"] = 330
    result = validate_standard(broken, tmp_path)
    assert result.returncode != 0 and "terminationGracePeriod" in result.stdout + result.stderr


def strict(schema: dict) -> dict:
    """The CRD's schema as the API server applies it with strict field validation: an
    object with declared properties refuses any other (kubebuilder leaves this implicit)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


def check_scaled_objects(objects: list[dict], tmp_path: Path) -> subprocess.CompletedProcess:
    crd = yaml.safe_load((REPO / "deploy/schemas/keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"]["enum"] = [f"{crd['spec']['group']}/{version['name']}"]
    (tmp_path / "scaledobject.schema.json").write_text(json.dumps(schema))
    instances = []
    for index, scaled in enumerate(by_kind(objects, "ScaledObject").values()):
        instances.append(tmp_path / f"scaledobject-{index}.json")
        instances[-1].write_text(json.dumps(scaled))
    return subprocess.run([str(BIN / "check-jsonschema"), "--schemafile", str(tmp_path / "scaledobject.schema.json"),
                           *map(str, instances)], capture_output=True, text=True)


def test_every_scaled_object_passes_kedas_published_schema(objects, tmp_path):
    result = check_scaled_objects(objects, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = copy.deepcopy(objects)
    trigger = by_kind(broken, "ScaledObject")["m2fp-worker-backfill"]["spec"]["triggers"][0]
    trigger["metadata"]["listLength"] = 20  # KEDA's metadata values are strings
    result = check_scaled_objects(broken, tmp_path)
    assert result.returncode != 0 and "listLength" in result.stdout + result.stderr


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_of(objects: list[dict], deployment: dict) -> dict[str, str]:
    """What the container's environment holds: its ConfigMap, then its own ``env``."""
    config = by_kind(objects, "ConfigMap")["m2fp-config"]["data"]
    return {**config, **{item["name"]: item["value"] for item in container(deployment).get("env", [])}}


def settings_of(objects: list[dict], deployment: dict) -> Settings:
    """The settings a pod of ``deployment`` would load (secrets aside)."""
    values = {name.lower(): value for name, value in env_of(objects, deployment).items()
              if name.lower() in Settings.model_fields}
    return Settings(**values, redis_password="x", s3_access_key="x", s3_secret_key="x")


WORKERS = {"m2fp-worker-interactive": [Priority.INTERACTIVE],
           "m2fp-worker-backfill": [Priority.INTERACTIVE, Priority.BACKFILL]}


def test_each_scaled_object_watches_the_waiting_jobs_of_its_deployments_queue(objects):
    scaled = by_kind(objects, "ScaledObject")
    deployments = by_kind(objects, "Deployment")
    for name, priorities in WORKERS.items():
        settings = settings_of(objects, deployments[name])
        queues = queue_names(settings)
        command = container(deployments[name])["command"]
        assert command[command.index("--queues") + 1].split(",") == [queues[p] for p in priorities]
        (trigger,) = scaled[name]["spec"]["triggers"]
        assert scaled[name]["spec"]["scaleTargetRef"]["name"] == name
        # The deployment's own queue with the least priority is the one it scales on.
        assert trigger["metadata"]["listName"] == JobQueue.WAITING + queues[priorities[-1]]
        # Every connection setting is read from the environment the workers themselves get.
        env = env_of(objects, deployments[name])
        secret_keys = {"REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"}  # the Secret m2fp-secrets (docs/kubernetes.md)
        for key, variable in trigger["metadata"].items():
            if key.endswith("FromEnv"):
                assert variable in env or variable in secret_keys, (key, variable)
        assert trigger["type"] == "redis-sentinel" and settings.redis_sentinels
        assert int(trigger["metadata"]["databaseIndex"]) == settings.redis_db
    assert scaled["m2fp-worker-interactive"]["spec"]["minReplicaCount"] >= 1
    assert scaled["m2fp-worker-backfill"]["spec"]["minReplicaCount"] == 0


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def mebibytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_model_workers_get_whole_cpus_matched_by_their_threads_and_time_to_finish_a_job(objects):
    deployments = by_kind(objects, "Deployment")
    for name in WORKERS:
        pod = deployments[name]["spec"]["template"]["spec"]
        resources = container(deployments[name])["resources"]
        assert resources["requests"] == resources["limits"]  # Guaranteed QoS: no noisy neighbour
        cores = cpus(resources["limits"]["cpu"])
        settings = settings_of(objects, deployments[name])
        assert cores == int(cores) == settings.worker_concurrency * settings.torch_threads
        needed = settings.worker_concurrency * PROCESS_MEMORY_MB["openvino"] + 512
        assert mebibytes(resources["limits"]["memory"]) >= needed
        assert pod["terminationGracePeriodSeconds"] > settings.task_time_limit
        probes = container(deployments[name])
        assert probes["livenessProbe"]["exec"]["command"][:3] == ["python", "-m", "common.worker_probe"]
        assert probes["startupProbe"]["periodSeconds"] * probes["startupProbe"]["failureThreshold"] >= 600
        spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert "kubernetes.io/hostname" in spread


def test_the_api_stays_ready_and_alive_while_redis_is_unreachable(objects, tmp_path):
    """Every API pod shares one Redis: a probe that asked it would take them all out of the
    Service at once in a Sentinel failover (or restart them all), and clients would get the
    ingress's error instead of the API's own 503 with Retry-After. So both probes' paths,
    as the manifests name them, must answer 200 from an API that reaches no Redis, while
    that API still tells clients and operators that Redis is away."""
    deployment = by_kind(objects, "Deployment")["m2fp-api"]
    paths = {probe: container(deployment)[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe")}
    # The pod's own settings, but sentinels nothing listens for and a local store.
    nowhere = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
    values = {**settings_of(objects, deployment).model_dump(),
              "redis_sentinels": nowhere, "storage_backend": "local", "local_store_dir": tmp_path / "store"}
    client = create_app(services=Services.create(Settings(**values), redis_retries=0)).test_client()
    for probe, path in paths.items():
        answer = client.get(path)
        assert answer.status_code == 200, (probe, path, answer.get_data(as_text=True))
    # What the pods stay in the Service for: the API's own answer, and a retry time.
    refused = client.post("/v1/jobs", data={"image": (io.BytesIO(photo_jpeg(64, 48, seed=1)), "photo.jpg")},
                          content_type="multipart/form-data")
    assert refused.status_code == 503 and refused.json["error"]["code"] == "queue_unavailable"
    assert int(refused.headers["Retry-After"]) > 0
    # Operators still see it: /readyz names Redis.
    dependencies = client.get("/readyz")
    assert dependencies.status_code == 503 and dependencies.json["checks"]["redis"] == "unavailable"


def test_the_webhook_worker_runs_a_fixed_count_and_no_scaled_object_targets_it(objects):
    """Deliberate (docs/kubernetes.md, "Why the webhook worker has no ScaledObject"): its
    main process runs the outbox sweep, so it never goes to zero, and no key counts
    exactly the deliveries waiting for it. KEDA scales exactly the model workers."""
    targets = {scaled["spec"]["scaleTargetRef"]["name"] for scaled in by_kind(objects, "ScaledObject").values()}
    assert targets == set(WORKERS)
    assert by_kind(objects, "Deployment")["m2fp-webhooks"]["spec"]["replicas"] >= 1


# ---- the key KEDA reads, against the code that writes it, on a real Redis and worker ----

@pytest.fixture()
def queue_stack(redis_server, tiny_model, tmp_path):
    url = redis_server.url.rsplit("/", 1)[0] + "/8"
    env = {"REDIS_URL": url, "M2FP_MODEL": str(tiny_model), "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1",
           "LOCAL_STORE_DIR": str(tmp_path / "store"), HOLD_FILE_VARIABLE: str(tmp_path / "hold")}
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    stack = Stack(env=env, log_dir=tmp_path, worker_app=HARNESS_APP).start_api()
    yield stack, client, tmp_path / "hold"
    stack.stop()


def test_the_watched_key_counts_every_waiting_job_and_only_those(queue_stack):
    stack, client, hold = queue_stack
    scaled = by_kind(render("production"), "ScaledObject")
    watched = {name: scaled[name]["spec"]["triggers"][0]["metadata"]["listName"] for name in WORKERS}
    celery_lists = queue_names(Settings())

    def keda(name: str) -> int:
        return int(client.eval(KEDA_COUNT, 1, watched[name]))

    stack.start_worker("w", WORKER_CONCURRENCY="1")
    hold.touch()
    running = stack.submit(photo_jpeg(64, 48, seed=1)).json()["id"]
    wait_until(lambda: holding_pids(hold), 120, "the worker to hold a job")
    interactive = [stack.submit(photo_jpeg(64, 48, seed=10 + i)).json()["id"] for i in range(3)]
    backfill = requests.post(f"{stack.api_url}/v1/jobs/batch", timeout=30, files=[
        ("image", (f"{i}.jpg", photo_jpeg(64, 48, seed=20 + i), "image/jpeg")) for i in range(2)]).json()
    assert [item["status"] for item in backfill["items"]] == [202, 202], backfill

    # One busy process, five jobs behind it (3 interactive, 2 backfill): the worker took
    # none of them ahead (one message per process), so every one still waits in its Celery
    # list and in the key KEDA counts.
    assert create_celery(Settings()).conf.worker_prefetch_multiplier == 1
    assert client.llen(celery_lists[Priority.INTERACTIVE]) == 3 and client.llen(celery_lists[Priority.BACKFILL]) == 2
    assert (keda("m2fp-worker-interactive"), keda("m2fp-worker-backfill")) == (3, 2)
    # A canceled job stops counting at once, though its message waits until a worker drops it.
    assert requests.post(f"{stack.api_url}/v1/jobs/{interactive[0]}/cancel", timeout=10).status_code == 200
    assert keda("m2fp-worker-interactive") == 2 and client.llen(celery_lists[Priority.INTERACTIVE]) == 3
    metrics = requests.get(f"{stack.api_url}/metrics", timeout=10).text
    assert re.search(r'm2fp_queue_depth\{priority="interactive",queue="m2fp.interactive"\} 2\.0', metrics), metrics

    hold.unlink()
    for job_id in [running, *interactive[1:], *(item["job"]["id"] for item in backfill["items"])]:
        assert stack.wait_for(job_id)["status"] == "succeeded"
    assert (keda("m2fp-worker-interactive"), keda("m2fp-worker-backfill")) == (0, 0)
