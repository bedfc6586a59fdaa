"""The compose stack as real containers: the images ``make images`` built, started from
``docker-compose.yml`` by the engine this machine has (Podman here, Docker elsewhere),
then scaled, killed, cut off and restarted as containers.

One stack serves the module, its tests in order. The workers run the production image
with the tests' fault injection mounted in (``tests/harness/worker_app.py``: a job waits
inside ``parse`` while a hold file exists), on the synthetic model in MODEL_DIR, which
compose mounts read-only.
The S3 store is the override's moto server when MinIO cannot be pulled.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from PIL import Image

from m2fp_client.client import ApiError, Client
from m2fp_contract.schema import OUTPUTS, JobStatus
from scripts import compose_env
from scripts.containers import (API_IMAGE, REPO, WORKER_IMAGE, ComposeStack, ContainerError, default_files,
                                engine)
from scripts.imagegen import ASTRONAUT, photo_jpeg
from scripts.processes import free_port, wait_until

pytestmark = pytest.mark.timeout(900)
SEEDS = itertools.count(1000)  # every photo its own content: the same bytes would share one job
HEARTBEAT, STRANDED_AFTER = 1, 4  # seconds: a silent worker's job is queued again within seconds
STALL = 20  # seconds: a worker that stops taking jobs after a reconnect (a Celery bug) restarts well within a wait


def photo() -> bytes:
    return photo_jpeg(64, 48, seed=next(SEEDS))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model):
    eng = engine()
    for image in (API_IMAGE, WORKER_IMAGE):
        assert eng.image_exists(image), f"{image} is missing: run 'make images' (make test does)"
    home = tmp_path_factory.mktemp("compose")
    env_file = home / ".env"
    compose_env.ensure_env_file(env_file)
    api_port, s3_port, console_port, prometheus_port = free_port(), free_port(), free_port(), free_port()
    with env_file.open("a") as env:
        env.write(f"API_PORT=127.0.0.1:{api_port}\nS3_PORT=127.0.0.1:{s3_port}\n"
                  f"S3_CONSOLE_PORT=127.0.0.1:{console_port}\nS3_PUBLIC_ENDPOINT=http://127.0.0.1:{s3_port}\n"
                  f"PROMETHEUS_PORT=127.0.0.1:{prometheus_port}\nMODEL_DIR={tiny_model.parent}\n")
    tiny_model.parent.chmod(0o755)  # the worker's user (uid 10001) reads MODEL_DIR; pytest made it 0700
    hold_dir = home / "hold"
    hold_dir.mkdir()
    hold_dir.chmod(0o777)  # the worker's user (uid 10001) writes its holding-<pid> marker here
    override = home / "test.yml"
    override.write_text(json.dumps({"services": {"worker": {
        "command": ["celery", "-A", "tests.harness.worker_app", "worker", "--loglevel", "INFO",
                    "--hostname", "worker@%h"],
        "environment": {"M2FP_MODEL": f"/model-src/{tiny_model.name}", "INFERENCE_MAX_SIDE": "64",
                        "M2FP_TEST_HOLD_FILE": "/hold/hold", "WORKER_HEARTBEAT_SECONDS": str(HEARTBEAT),
                        "STRANDED_AFTER_SECONDS": str(STRANDED_AFTER), "WORKER_STALL_SECONDS": str(STALL)},
        "volumes": [f"{REPO / 'tests'}:/app/tests:ro", f"{hold_dir}:/hold"],
    }}}))
    compose = ComposeStack(f"m2fptest{free_port()}", env_file, [*default_files(eng), override], eng)
    compose.hold_file = hold_dir / "hold"
    compose.s3_url = f"http://127.0.0.1:{s3_port}"
    compose.prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    compose.client = Client(f"http://127.0.0.1:{api_port}", timeout=30)
    try:
        compose.up(workers=1)
        compose.wait_healthy(timeout=300)
        yield compose
    finally:
        compose.down(volumes=True)


@contextlib.contextmanager
def holding(stack: ComposeStack):
    """Jobs that start inside the block wait in ``parse`` until it ends."""
    stack.hold_file.write_text("hold")
    try:
        yield
    finally:
        stack.hold_file.unlink()


def hostname(stack: ComposeStack, container: str) -> str:
    return stack.engine.run("inspect", "--format", "{{.Config.Hostname}}", container).stdout.strip()


def container_of(stack: ComposeStack, worker: str) -> str:
    """The worker container whose Celery node is ``worker`` (``worker@<hostname>``)."""
    by_node = {f"worker@{hostname(stack, name)}": name for name in stack.containers("worker")}
    return by_node[worker]


def running_on(stack: ComposeStack, job_id: str) -> str:
    """Wait until the job runs (held in parse); the container running it."""
    wait_until(lambda: stack.client.job(job_id).status == JobStatus.RUNNING, 120, f"job {job_id} running", 0.2)
    return container_of(stack, stack.client.job(job_id).worker)


def ended(stack: ComposeStack, job_ids, timeout: float = 180):
    return stack.client.wait(job_ids, poll_interval=0.2, timeout=timeout)


def scale(stack: ComposeStack, workers: int) -> None:
    stack.up(workers=workers)
    wait_until(lambda: len(stack.containers("worker", running=True)) == workers, 120, f"{workers} workers")
    stack.wait_healthy(timeout=300, services=["worker"])


def test_a_photo_goes_in_through_the_api_container_and_its_outputs_come_back_from_the_store(stack, tmp_path):
    [job] = ended(stack, [stack.client.submit(photo()).id])
    assert job.status == JobStatus.SUCCEEDED, job
    assert job.worker in {f"worker@{hostname(stack, name)}" for name in stack.containers("worker")}
    files = stack.client.download(job, tmp_path)  # presigned links to the store's published port
    assert sorted(files) == sorted(OUTPUTS)
    assert job.result.outputs["labels.png"].startswith(stack.s3_url + "/")  # from the store, not the API
    with Image.open(files["labels.png"]) as labels:
        assert labels.size == (64, 48) and labels.mode == "L"


def test_the_pose_model_runs_in_the_worker_image_on_a_real_photo(stack, tmp_path):
    """Keypoints, masks and garments from the worker container: the pose model (mediapipe,
    installed apart from its declared dependencies) runs there, read-only root and all."""
    [job] = ended(stack, [stack.client.submit(ASTRONAUT, outputs=["keypoints", "masks", "garments"]).id])
    assert job.status == JobStatus.SUCCEEDED, job
    summary = job.result.summary
    assert summary["keypoints"]["source"] == "model" and summary["keypoints"]["model"]["engine"] == "mediapipe"
    files = stack.client.download(job, tmp_path)
    people = json.loads(files["keypoints.json"].read_text())["people"]
    found = [p["id"] for p in summary["keypoints"]["people"] if p["found"]]
    assert found and [p["person_id"][0] for p in people] == found  # her body, found in the container
    assert any(name.startswith("masks/") for name in files) and "cloth_mask.png" in files


def test_the_containers_run_with_the_production_settings_of_the_file(stack):
    """Read back from the running containers, not from the YAML: what the engine applied,
    and what the processes inside see (no capabilities, no privilege gain, a read-only
    root with a writable /tmp)."""
    def inspect(name: str) -> dict:
        return json.loads(stack.engine.run("inspect", name).stdout)[0]

    def inside(name: str, command: str) -> subprocess.CompletedProcess:
        return stack.engine.run("exec", name, "sh", "-c", command, check=False)

    for service in ("api", "worker", "webhooks"):
        name = stack.containers(service)[0]
        config = inspect(name)
        assert config["HostConfig"]["ReadonlyRootfs"] is True, service
        log = config["HostConfig"]["LogConfig"]
        assert log.get("Size") == "10MB" or (log.get("Config") or {}).get("max-size") == "10m", (service, log)
        assert config["Config"]["User"] == "app", service
        status = dict(line.split(":\t", 1) for line in inside(name, "cat /proc/1/status").stdout.splitlines()
                      if ":\t" in line)
        assert int(status["CapBnd"], 16) == 0 and int(status["CapEff"], 16) == 0, (service, status["CapBnd"])
        assert status["NoNewPrivs"].strip() == "1", service
        assert inside(name, "touch /app/written").returncode != 0, service
        assert inside(name, "touch /tmp/written && touch $HOME/written").returncode == 0, service
    worker = inspect(stack.containers("worker")[0])["HostConfig"]
    assert worker["NanoCpus"] == 1_000_000_000 or worker["CpuQuota"] == worker["CpuPeriod"]
    assert worker["Memory"] == 4000 * 1024 * 1024
    # The worker sized itself from those limits: one model process, one thread.
    assert "Resource plan: 1 usable CPU(s)" in stack.logs(stack.containers("worker")[0])


def test_prometheus_of_the_metrics_profile_scrapes_the_api_and_every_worker_replica(stack):
    """compose/prometheus.yml as the containers see it: the API by name, each worker
    replica found through the network's DNS, every target up."""
    scale(stack, 2)
    stack.compose("--profile", "metrics", "up", "-d", "--no-deps", "prometheus")
    address = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
    workers = {f"{stack.engine.run('inspect', '--format', address, name).stdout.strip()}:9808"
               for name in stack.containers("worker")}

    def targets_up() -> dict[str, set[str]]:
        try:
            answer = requests.get(f"{stack.prometheus_url}/api/v1/targets", timeout=5).json()
        except (requests.RequestException, ValueError):
            return {}
        up: dict[str, set[str]] = {}
        for target in answer["data"]["activeTargets"]:
            if target["health"] == "up":
                up.setdefault(target["labels"]["job"], set()).add(target["labels"]["instance"])
        return up

    wait_until(lambda: targets_up() == {"m2fp-api": {"api:8000"}, "m2fp-worker": workers}, 180,
               "Prometheus to scrape the API and both workers", 1)


def test_compose_down_and_up_loses_no_accepted_job(stack):
    """Jobs accepted while no worker runs wait in Redis; `down` removes the containers and
    keeps Redis's volume, and `up` finds every job again. The S3 store keeps its own data
    (MinIO on its volume); moto, the stand-in here, keeps objects in memory only, so it is
    the one service this `down` spares."""
    for name in stack.containers("worker"):
        stack.engine.run("stop", name)
    accepted = [stack.client.submit(photo()).id for _ in range(3)]
    assert {stack.client.job(job_id).status for job_id in accepted} == {JobStatus.QUEUED}
    [redis_before] = stack.containers("redis")
    redis_id = stack.engine.run("inspect", "--format", "{{.Id}}", redis_before).stdout
    ours = ["redis", "createbucket", "api", "worker", "webhooks"]
    stack.down(services=ours)
    assert not [name for service in ours for name in stack.containers(service)]
    stack.up(workers=1)
    stack.wait_healthy(timeout=300)
    [redis_after] = stack.containers("redis")
    assert stack.engine.run("inspect", "--format", "{{.Id}}", redis_after).stdout != redis_id  # a new container
    assert {job.status for job in ended(stack, accepted)} == {JobStatus.SUCCEEDED}


def test_jobs_spread_over_two_worker_replicas(stack):
    scale(stack, 2)
    with holding(stack):
        first = stack.client.submit(photo()).id
        busy = running_on(stack, first)
        second = stack.client.submit(photo()).id  # the busy replica takes one job at a time
        other = running_on(stack, second)
    assert busy != other
    jobs = ended(stack, [first, second])
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED] * 2
    assert {container_of(stack, job.worker) for job in jobs} == set(stack.containers("worker"))


def test_a_worker_container_killed_mid_job_its_job_ends_on_the_other_replica(stack):
    scale(stack, 2)
    with holding(stack):
        job_id = stack.client.submit(photo()).id
        victim = running_on(stack, job_id)
        stack.engine.run("kill", "--signal", "KILL", victim)
    [job] = ended(stack, [job_id])
    assert job.status == JobStatus.SUCCEEDED, job
    assert container_of(stack, job.worker) != victim
    assert job.attempts == 2  # the killed attempt is reported, and it was parsed once more, not more
    scale(stack, 2)  # the killed replica comes back


def test_a_worker_cut_off_from_the_network_mid_job_loses_nothing_and_rejoins(stack):
    scale(stack, 2)
    network = f"{stack.project}_default"
    with holding(stack):  # released at the cut: the cut worker's parse goes on, and cannot report
        job_id = stack.client.submit(photo()).id
        cut = running_on(stack, job_id)
        stack.engine.run("network", "disconnect", network, cut)
    try:
        # Its heartbeat is silent, so the other replica's sweep queues the job again.
        [job] = ended(stack, [job_id])
        assert job.status == JobStatus.SUCCEEDED, job
        assert container_of(stack, job.worker) != cut
    finally:
        stack.engine.run("network", "connect", network, cut)
    # Rejoined: with the other replica stopped, the cut one takes the next job (itself, or after
    # restarting if its consumer came back unable to fetch: worker/consumption_guard.py).
    [other] = [name for name in stack.containers("worker") if name != cut]
    stack.engine.run("stop", other)
    try:
        [rejoined] = ended(stack, [stack.client.submit(photo()).id])
        assert rejoined.status == JobStatus.SUCCEEDED and container_of(stack, rejoined.worker) == cut
        # The cut worker's late attempt at the first job changed nothing: still succeeded, once more.
        again = stack.client.job(job_id)
        assert again.status == JobStatus.SUCCEEDED and again.worker == job.worker and again.attempts == job.attempts
    finally:
        scale(stack, 2)


def test_the_api_container_restarted_under_load_loses_no_accepted_job(stack):
    api = stack.containers("api")[0]
    accepted: list[str] = []
    refused: list[int] = []
    restarted, stop = threading.Event(), threading.Event()

    def submit_until_stopped() -> None:
        while not stop.is_set():
            try:
                accepted.append(stack.client.submit(photo()).id)
            except ApiError as exc:  # refused during the restart (unreachable, or 503): not accepted
                if exc.status is not None:
                    refused.append(exc.status)

    submitters = [threading.Thread(target=submit_until_stopped) for _ in range(3)]
    for thread in submitters:
        thread.start()
    try:
        wait_until(lambda: len(accepted) >= 5, 120, "submissions before the restart")
        stack.engine.run("restart", api)
        after = len(accepted)
        wait_until(lambda: len(accepted) >= after + 5, 180, "submissions after the restart")
    finally:
        stop.set()
        for thread in submitters:
            thread.join()
    assert all(status == 503 for status in refused), refused  # never a 500
    jobs = ended(stack, accepted, timeout=600)
    assert {job.status for job in jobs} == {JobStatus.SUCCEEDED}, [j for j in jobs if j.status != JobStatus.SUCCEEDED]


def test_a_worker_whose_model_it_may_not_read_stops_naming_the_fix(tmp_path, tiny_model):
    """A model folder the image's user cannot read (a 0700 folder on the host, as pytest
    and many home directories make them): the worker stops, and says why and what to do,
    rather than that some start-up step "did not run"."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(tiny_model, private / "m2fp-tiny")
    done = engine().run("run", "--rm", "--read-only", "--tmpfs", "/tmp", "-e", "M2FP_MODEL=/model-src/m2fp-tiny",
                        "-e", "LOCAL_STORE_DIR=/tmp/store", "-e", "REDIS_URL=redis://127.0.0.1:9/0",
                        "-v", f"{private}:/model-src:ro", WORKER_IMAGE, check=False, timeout=300)
    assert done.returncode != 0
    assert "M2FP_MODEL=/model-src/m2fp-tiny cannot be read by this process (uid 10001)" in done.stdout + done.stderr
    assert "chmod o+rx" in done.stdout + done.stderr


def selfcheck_step() -> str:
    """The worker Dockerfile's own self-check instruction, as written there."""
    instructions = re.split(r"\n(?=[A-Z]+ )", (REPO / "compose" / "worker.Dockerfile").read_text())
    [step] = [text for text in instructions if text.startswith("RUN ") and "worker.selfcheck" in text]
    return step


def test_the_worker_image_build_fails_naming_the_fix_when_opencv_is_the_wrong_build(tmp_path):
    """The trap the worker Dockerfile guards against: opencv-python (the GUI build that
    pulls NumPy 2 and shadows cv2) beside the headless one, as OpenMMLab's mmcv-full
    wheel asks for it. Installed into the built image, the Dockerfile's own self-check
    step fails the build and names the fix."""
    wheels = tmp_path / "wheels"
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                              "-d", str(wheels), "opencv-python==4.8.1.78"], capture_output=True, text=True)
    assert fetched.returncode == 0, fetched.stderr
    (tmp_path / "Dockerfile").write_text(
        f"FROM {WORKER_IMAGE}\nUSER root\nCOPY wheels/ /wheels/\n"
        f"RUN pip install --no-deps --no-index /wheels/*.whl\n{selfcheck_step()}\n")
    with pytest.raises(ContainerError) as failed:
        engine().run("build", "-t", "m2fp-queue/worker-broken-opencv", str(tmp_path), timeout=600)
    assert "opencv-python is installed beside opencv-python-headless" in str(failed.value)
    assert "pip uninstall -y opencv-python" in str(failed.value)
