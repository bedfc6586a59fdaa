"""The compose deployment, checked as far as a machine without a Docker engine allows:
secrets, ports and credentials as an attacker would meet them, the wiring of the
services, and that they start the entry points the tests start. The file is rendered
the way Compose renders it (tests/harness/compose.py) with secrets from
scripts/compose_env.py, the generator ``make compose-env`` runs."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import yaml
from docker.utils.build import PatternMatcher

from common.settings import Settings
from scripts import compose_env
from scripts.processes import Process, api_command, delivery_command, free_port, redis_executable, wait_until, worker_command
from tests.harness.compose import MissingVariable, interpolate, load, load_file, render
from worker.resources import MAIN_PROCESS_MEMORY_MB, MIB, plan_resources

REPO = Path(__file__).resolve().parent.parent
COMPOSE = load()
TEXT = (REPO / "docker-compose.yml").read_text()
# Files merged onto docker-compose.yml with `-f` (compose/s3-moto.yml): the YAML files
# under compose/ with services of their own, beside Prometheus' and Grafana's configs.
COMPOSE_OVERRIDES = sorted(path for path in (REPO / "compose").rglob("*.y*ml")
                           if isinstance(document := load_file(path), dict) and "services" in document)
# Names that hold a credential, wherever they appear (service environments, .env).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER|_AUTH$|(^|_)KEYS?$")
SERVICES_OF_OURS = ("api", "worker", "webhooks")  # built from this repository, read common/settings.py
# Reading, writing and listing a bucket's objects: nothing on its policy, ACLs, lifecycle
# or existence, and no admin action.
DATA_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketLocation",
                "s3:ListBucketMultipartUploads", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}


def generated_env(tmp_path: Path, name: str = "generated.env") -> dict[str, str]:
    """The secrets a first ``make compose-env`` writes, read back from its file."""
    path = tmp_path / name
    compose_env.ensure_env_file(path)
    return compose_env.read_values(path.read_text())


@pytest.mark.parametrize("text, env, expected", [
    # The specification's forms (docs: Compose file reference, "Interpolation").
    ("${A}", {"A": "x"}, "x"), ("$A-b", {"A": "x"}, "x-b"), ("${A}", {}, ""),
    ("${A:-d}", {}, "d"), ("${A:-d}", {"A": ""}, "d"), ("${A-d}", {"A": ""}, ""), ("${A-d}", {}, "d"),
    ("${A:+r}", {"A": "x"}, "r"), ("${A:+r}", {"A": ""}, ""), ("${A+r}", {"A": ""}, "r"),
    ("${A:-${B:-d}}", {}, "d"), ("${A:-${B}}", {"B": "b"}, "b"), ("${A?$B}", {"A": "x"}, "x"),
    ("$$A", {"A": "x"}, "$A"), ("a $ b", {}, "a $ b"), ("${A:?e}", {"A": "x"}, "x"),
])
def test_the_interpolation_follows_the_compose_specification(text, env, expected):
    assert interpolate(text, env) == expected


@pytest.mark.parametrize("text, env", [("${A:?e}", {}), ("${A:?e}", {"A": ""}), ("${A?e}", {}),
                                       ("x${A:-${B:?e}}", {})])
def test_a_required_variable_stops_the_interpolation(text, env):
    with pytest.raises(MissingVariable, match="e$"):
        interpolate(text, env)
    assert interpolate("${A?e}", {"A": ""}) == ""  # ? without the colon accepts empty


def test_no_secret_has_a_default_in_the_compose_file():
    """A secret-looking variable is either required (``:?``) or off when unset (an empty
    default, e.g. WEBHOOK_SIGNING_KEY); a literal default such as
    ``${MINIO_ROOT_PASSWORD:-m2fp-secret-change-me}`` would be anyone's password."""
    references = re.findall(r"\$\{([A-Za-z_]\w*)(:?[-?+])?([^}]*)\}", TEXT)
    secrets_referenced = [(name, op, operand) for name, op, operand in references if SECRET_NAME.search(name)]
    assert {name for name, _, _ in secrets_referenced} >= {secret.name for secret in compose_env.SECRETS}
    for name, op, operand in secrets_referenced:
        assert op == ":?" or (op in (":-", "-") and operand == ""), f"${{{name}{op}{operand}}} gives a default"


def test_every_credential_in_the_rendered_stack_comes_from_the_env_file(tmp_path):
    """Rendered from two .env files whose every value differs, every credential a
    container gets differs between the two (or is empty: the feature is off), so none is
    a literal of the file: not a password in an environment, in REDIS_URL, or on a
    command line."""
    env = generated_env(tmp_path)
    first, second = render(env), render({name: f"{value}-2" for name, value in env.items()})
    checked = 0
    for name, service in first["services"].items():
        other = second["services"][name]
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert value == "" or value != other["environment"][key], f"{name}: {key} is a literal"
                checked += bool(value)
        if name in SERVICES_OF_OURS:
            password = urlsplit(service["environment"]["REDIS_URL"]).password
            assert password and password != urlsplit(other["environment"]["REDIS_URL"]).password
        command = service.get("command") or []
        for index, flag in enumerate(command[:-1] if isinstance(command, list) else []):
            if re.search(r"pass|secret|key", flag, re.I):
                assert command[index + 1] != other["command"][index + 1], f"{name}: {flag} is a literal"
                checked += 1
    assert checked >= 15  # root login (2 services), service user (4), Redis (2), Grafana: all looked at


def test_the_stack_refuses_to_render_without_each_secret(tmp_path):
    """Each secret the generator writes is required: without it (unset or empty) Compose
    stops and its message names the fix; with all of them the file renders."""
    env = generated_env(tmp_path)
    required = set(re.findall(r"\$\{([A-Za-z_]\w*):\?", TEXT))
    assert required == {secret.name for secret in compose_env.SECRETS}  # the generator writes all, and only those
    for name in sorted(required):
        for missing in ({k: v for k, v in env.items() if k != name}, {**env, name: ""}):
            with pytest.raises(MissingVariable) as refused:
                render(missing)
            assert refused.value.name == name and "make compose-env" in refused.value.message
    assert render(env)["services"]["redis"]["environment"]["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]


def _published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each port a service publishes; "" is every interface."""
    published = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            published.append((port.get("host_ip", ""), str(port.get("published", port["target"]))))
            continue
        parts = str(port).rsplit(":", 2)
        host_ip = parts[0] if len(parts) == 3 else ""
        published.append((host_ip.strip("[]"), parts[-2] if len(parts) >= 2 else parts[-1]))
    return published


def test_only_the_api_is_published_beyond_the_host(tmp_path):
    """MinIO (its API and the console with the root login), Prometheus (no login at all)
    and Grafana listen on the host's loopback; the API alone on every interface."""
    services = render(generated_env(tmp_path))["services"]
    seen = set()
    for name, service in services.items():
        for host_ip, host_port in _published(service):
            seen.add(name)
            if name == "api":
                assert host_port == "8000"
            else:
                assert host_ip in ("127.0.0.1", "::1"), f"{name} publishes {host_port} on every interface"
    assert {"minio", "prometheus", "grafana", "api"} <= seen  # those publish something: checked above
    assert sorted(port for _, port in _published(services["minio"])) == ["9000", "9001"]


def test_the_services_use_a_storage_user_of_their_own_not_the_root_login(tmp_path):
    env = generated_env(tmp_path)
    services = render(env)["services"]
    root = {env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]}
    for name, service in services.items():
        environment = service.get("environment") or {}
        if name in ("minio", "createbucket"):
            continue
        assert not root & set(map(str, environment.values())), f"{name} gets MinIO's root login"
        assert not [key for key in environment if key.startswith("MINIO_ROOT")], name
    for name in SERVICES_OF_OURS:
        environment = services[name]["environment"]
        assert environment["S3_ACCESS_KEY"] == env["S3_ACCESS_KEY"] != env["MINIO_ROOT_USER"]
        assert environment["S3_SECRET_KEY"] == env["S3_SECRET_KEY"] != env["MINIO_ROOT_PASSWORD"]
    init = services["createbucket"]["environment"]  # creates that user, for the services' bucket
    assert {k: init[k] for k in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET")} == \
        {k: services["api"]["environment"][k] for k in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET")}
    assert services["minio"]["environment"]["MINIO_ROOT_USER"] == init["MINIO_ROOT_USER"] == env["MINIO_ROOT_USER"]
    for name in ("api", "worker"):  # they start once that user exists
        assert services[name]["depends_on"]["createbucket"] == {"condition": "service_completed_successfully"}


def _run_storage_init(tmp_path: Path, env: dict[str, str], attach_error: str = "") -> tuple[int, list[list[str]], str]:
    """Run compose/minio/init.sh as the createbucket service does (``/bin/sh`` on the
    mounted script, its compose environment), with a stand-in ``mc`` that records each
    call and keeps the policy file it is given; ``attach_error`` makes the policy attach
    fail with that message. Returns the exit status, the calls and stderr."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "mc-calls.jsonl"
    log.unlink(missing_ok=True)
    (bin_dir / "mc").write_text(f"""#!{sys.executable}
import json, shutil, sys
with open({str(log)!r}, "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:4] == ["admin", "policy", "create"]:
    shutil.copy(sys.argv[-1], {str(tmp_path / "policy.json")!r})
if sys.argv[1:4] == ["admin", "policy", "attach"] and {attach_error!r}:
    sys.exit("mc: <ERROR> " + {attach_error!r})
""")
    (bin_dir / "mc").chmod(0o755)
    service = COMPOSE["services"]["createbucket"]
    [mount] = service["volumes"]
    source, target = mount.split(":")[:2]
    assert service["entrypoint"] == ["/bin/sh", target]
    done = subprocess.run(["/bin/sh", str(REPO / source)], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp_path), **env})
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return done.returncode, calls, done.stderr


def test_the_storage_init_gives_the_services_a_user_limited_to_their_bucket(tmp_path):
    """The one-shot service signs in as root, makes the bucket, and creates the services'
    user with a policy that names that bucket only, with no wildcard action; it refuses
    to hand out the root login, and a second run (the policy already attached) passes."""
    env = generated_env(tmp_path)
    init_env = render(env)["services"]["createbucket"]["environment"]
    status, calls, stderr = _run_storage_init(tmp_path, init_env)
    assert status == 0, stderr
    bucket, user, secret = init_env["S3_BUCKET"], env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"]
    assert calls[0] == ["alias", "set", "local", "http://minio:9000", env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]]
    assert ["mb", "--ignore-existing", f"local/{bucket}"] in calls
    [create] = [call for call in calls if call[:3] == ["admin", "policy", "create"]]
    policy_name = create[4]
    assert ["admin", "user", "add", "local", user, secret] in calls
    assert calls[-1] == ["admin", "policy", "attach", "local", policy_name, "--user", user]
    policy = json.loads((tmp_path / "policy.json").read_text())
    resources = {resource for statement in policy["Statement"] for resource in statement["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    actions = {action for statement in policy["Statement"] for action in statement["Action"]}
    assert all(statement["Effect"] == "Allow" for statement in policy["Statement"])
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions  # what storage.py does
    assert actions <= DATA_ACTIONS, f"more than the bucket's data: {sorted(actions - DATA_ACTIONS)}"

    again = _run_storage_init(tmp_path, init_env, attach_error="The specified policy change is already in effect.")
    assert again[0] == 0, again[2]
    broken = _run_storage_init(tmp_path, init_env, attach_error="Unable to make user/group policy association.")
    assert broken[0] != 0 and "Unable to make" in broken[2]
    as_root = {**init_env, "S3_ACCESS_KEY": env["MINIO_ROOT_USER"]}
    refused = _run_storage_init(tmp_path, as_root)
    assert refused[0] != 0 and refused[1] == [] and "must differ from MINIO_ROOT_USER" in refused[2]
    for name in ("S3_SECRET_KEY", "MINIO_ROOT_PASSWORD"):
        unset = _run_storage_init(tmp_path, {k: v for k, v in init_env.items() if k != name})
        assert unset[0] != 0 and unset[1] == [] and "make compose-env" in unset[2]


def test_redis_refuses_clients_without_the_password_the_services_carry(tmp_path):
    """The compose Redis command, run by a real redis-server on loopback: a client without
    the password is refused, the services' REDIS_URL gets in, and the password is not on
    the process's command line for others on the host to read."""
    from kombu import Connection

    env = generated_env(tmp_path)
    services = render(env)["services"]
    command = services["redis"]["command"]
    assert command[0] == "redis-server"
    port = free_port()
    server = Process("redis", [redis_executable(), *command[1:], "--port", str(port), "--bind", "127.0.0.1",
                               "--dir", str(tmp_path), "--save", "", "--daemonize", "no"],
                     log_path=tmp_path / "redis.log")
    try:
        def answers() -> bool:
            assert server.alive(), server.log_text()
            try:
                redis.Redis(port=port, socket_connect_timeout=1).ping()
            except redis.AuthenticationError:
                return True
            except redis.ConnectionError:
                return False
            return True
        wait_until(answers, 20, "the compose redis-server to listen")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()  # NOAUTH
        for name in SERVICES_OF_OURS:
            url = services[name]["environment"]["REDIS_URL"]
            parts = urlsplit(url)
            assert parts.hostname == "redis" and parts.port == 6379
            local = url.replace("@redis:6379/", f"@127.0.0.1:{port}/")
            assert redis.Redis.from_url(local).ping()  # job records
            with Connection(local) as broker:  # Celery's broker
                broker.ensure_connection(max_retries=1)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert env["REDIS_PASSWORD"].encode() not in cmdline
    finally:
        server.stop()
    # The healthcheck logs in as redis-cli does (REDISCLI_AUTH) and wants PONG itself:
    # without -e, redis-cli exits 0 after an error reply such as NOAUTH.
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
    kind, check = services["redis"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and re.fullmatch(r"redis-cli ping \| grep -qx PONG", check)


def test_grafana_has_no_default_admin_password(tmp_path):
    """Grafana's admin password is the operator's or the generated one, never a default
    (without it the stack does not start), and no anonymous access is switched on."""
    env = generated_env(tmp_path)
    grafana = render(env)["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == env["GRAFANA_ADMIN_PASSWORD"]
    with pytest.raises(MissingVariable, match="GRAFANA_ADMIN_PASSWORD"):
        render({k: v for k, v in env.items() if k != "GRAFANA_ADMIN_PASSWORD"})
    assert not [key for key, value in grafana.items() if key.startswith("GF_AUTH_ANONYMOUS") and value.lower() == "true"]


def test_the_services_read_each_setting_compose_gives_them():
    """Every variable compose sets in the API's, the workers' and the delivery worker's
    containers is a field of common/settings.py: the settings ignore unknown names, so a
    misspelt S3_SECRET_KEY would start a service on no credential at all."""
    from common.settings import Settings

    for name in SERVICES_OF_OURS:
        unknown = set(COMPOSE["services"][name]["environment"]) - {field.upper() for field in Settings.model_fields}
        assert not unknown, f"{name} gets {sorted(unknown)}, which common/settings.py does not read"


# The API's settings an operator sets in .env (docs/deployment.md, docs/configuration.md).
API_PASSED_THROUGH = {"TRUSTED_PROXIES": "1", "API_WORKERS": "4", "API_THREADS": "16", "API_REQUEST_TIMEOUT": "60",
                      "MAX_BATCH_BYTES": "536870912"}
# Defaults of compose's own, not the settings': the MinIO port compose publishes.
COMPOSE_DEFAULTS = {"S3_PUBLIC_ENDPOINT"}


def test_the_api_gets_the_settings_set_in_env_and_otherwise_the_settings_defaults(tmp_path):
    """Each of the API's settings that the docs tell a compose user to set reaches its
    container; left unset, each ``${VAR:-default}`` of our services is the setting's own
    default (what docs/configuration.md says), not a second value of compose's."""
    from pydantic import TypeAdapter

    from common.settings import Settings

    env = generated_env(tmp_path)
    api = render({**env, **API_PASSED_THROUGH})["services"]["api"]["environment"]
    assert {key: api.get(key) for key in API_PASSED_THROUGH} == API_PASSED_THROUGH
    defaults = render(env)["services"]["api"]["environment"]
    assert defaults["TRUSTED_PROXIES"] == "0"  # forwarded headers ignored until the operator says otherwise
    for name in SERVICES_OF_OURS:
        for key, value in COMPOSE["services"][name]["environment"].items():
            given = re.fullmatch(r"\$\{(\w+):-([^}$]+)\}", str(value))
            if not given or key in COMPOSE_DEFAULTS:
                continue
            field = Settings.model_fields[key.lower()]
            assert given.group(1) == key and TypeAdapter(field.annotation).validate_python(given.group(2)) == (
                field.default), f"{name}: {key} defaults to {given.group(2)!r}, the setting to {field.default!r}"


def test_the_stack_is_wired_together(tmp_path):
    """What `docker compose up` needs beyond YAML: each dependency exists and can report
    what is waited for, each named volume is declared, each mounted file exists, and the
    model cache is mounted where the worker image keeps it."""
    services = render(generated_env(tmp_path))["services"]
    declared_volumes = set(COMPOSE["volumes"])
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):  # the short form: started, nothing more
            depends_on = {dependency: {"condition": "service_started"} for dependency in depends_on}
        for dependency, how in depends_on.items():
            assert dependency in services, f"{name} waits for {dependency}, which does not exist"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency} has no healthcheck for {name}"
            if how["condition"] == "service_completed_successfully":
                assert "restart" not in services[dependency], f"{dependency} must be a one-shot for {name}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared_volumes, f"{name} mounts undeclared volume {source}"
    worker_image = (REPO / "compose/worker.Dockerfile").read_text()
    model_dir = re.search(r"MODEL_CACHE_DIR=(\S+)", worker_image).group(1)
    assert f"model-cache:{model_dir}" in services["worker"]["volumes"]
    redis_volume = next(v for v in services["redis"]["volumes"] if v.endswith(":/data"))
    assert redis_volume.split(":")[0] in declared_volumes and "--appendonly" in services["redis"]["command"]


def test_worker_is_scalable():
    worker = COMPOSE["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N must work
    assert "worker@%h" in worker["command"]  # each replica gets its own Celery node name


def _seconds(duration: str) -> float:
    """A Compose duration (``330s``, ``5m``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


@pytest.mark.parametrize("env", [{}, {"TASK_TIME_LIMIT": "600", "WORKER_STOP_GRACE": "11m"}])
def test_a_stopped_worker_gets_longer_than_a_job_to_finish(tmp_path, env):
    """Compose stops a worker with SIGTERM and kills it after its stop grace: that grace
    must exceed the hard time limit the worker is given, or a stop kills jobs that would
    have ended (they are run again, but twice the work)."""
    worker = render({**generated_env(tmp_path), **env})["services"]["worker"]
    assert _seconds(worker["stop_grace_period"]) > int(worker["environment"]["TASK_TIME_LIMIT"])
    assert _seconds("1m30s") == 90 and _seconds("330s") == 330


def _module_args(argv):
    """The part after ``python -m`` in our own process commands."""
    return argv[argv.index("-m") + 1:]


def test_services_start_the_same_entry_points_as_the_tests():
    api = COMPOSE["services"]["api"]["command"]
    ours = _module_args(api_command(8000))
    assert api[:2] == ours[:2] == ["gunicorn", "api.wsgi:app"]
    assert api[api.index("--config") + 1] == ours[ours.index("--config") + 1]
    # Sizing and timeouts come from the settings through the config module, never the command.
    assert api == ["gunicorn", "api.wsgi:app", "--config", "python:api.gunicorn_conf", "--bind", "0.0.0.0:8000"]
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
    # The default build (not the wheelhouse one `make images` runs here) is production's:
    # torch's CPU-only wheels and OpenMMLab's prebuilt mmcv-full, unreachable from here.
    worker = (REPO / "compose/worker.Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_LOCAL_VERSION=\+cpu$", worker, flags=re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu$", worker, flags=re.M)
    assert re.search(r"^ARG MMCV_FIND_LINKS=https://download.openmmlab.com/mmcv/dist/cpu/torch1.13/", worker,
                     flags=re.M)
    assert re.search(r"^ARG WHEELHOUSE_ONLY=0$", worker, flags=re.M)
    api_requirements = [line for path in ("api.txt", "common.txt")
                        for line in (REPO / "requirements" / path).read_text().splitlines()
                        if line and not line.startswith("#")]
    assert not [line for line in api_requirements if re.match(r"(torch|mmcv|modelscope|openvino)", line)]
    api_copies = re.findall(r"^COPY (\S+) ", (REPO / "compose/api.Dockerfile").read_text(), flags=re.M)
    assert "worker/" not in api_copies  # the API enqueues through common/queue.py, never imports worker/


def test_the_worker_healthcheck_answers_for_a_live_worker_only(redis_server, tiny_model, tmp_path):
    """Run the compose healthcheck's own command against a real worker, the way Docker
    would inside its container: it fails before the model is loaded, passes once the
    worker takes jobs, and fails as soon as the worker has stopped."""
    import subprocess

    from scripts.processes import wait_until
    from scripts.stack import Stack

    kind, *command = COMPOSE["services"]["worker"]["healthcheck"]["test"]
    assert kind == "CMD" and command[0] == "python"
    env = {"REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/6", "M2FP_MODEL": str(tiny_model),
           "INFERENCE_MAX_SIDE": "64", "TORCH_THREADS": "1", "LOCAL_STORE_DIR": str(tmp_path / "store"),
           "WORKER_LIVENESS_DIR": str(tmp_path / "liveness")}
    stack = Stack(env=env, log_dir=tmp_path)

    def healthcheck() -> int:
        return subprocess.run([sys.executable, *command[1:]], cwd=REPO, capture_output=True,
                              env=stack.process_env()).returncode

    assert healthcheck() != 0
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


def test_the_api_gets_its_keys_and_rate_so_a_compose_deployment_can_close(tmp_path):
    """The operator's API key and rate settings reach the API's container (else compose
    would always run open while webhooks are signed), unset they stay empty, and the key
    file's directory is mounted read-only."""
    from common.settings import Settings

    env = generated_env(tmp_path)
    given = {"API_KEYS": "acme:k-1", "API_KEYS_FILE": "/run/m2fp/keys/api-keys", "SUBMIT_RATE_PER_MINUTE": "7",
             "WEBHOOK_SIGNING_KEY": "signing"}
    set_up, unset = render({**env, **given})["services"]["api"], render(env)["services"]["api"]
    for variable, value in given.items():
        assert variable.lower() in Settings.model_fields, variable  # the names the settings read
        assert set_up["environment"][variable] == value and unset["environment"][variable] == "", variable
    [mount] = [volume for volume in set_up["volumes"] if volume.endswith(":/run/m2fp/keys:ro")]
    assert mount.startswith("./compose/keys:")
    assert render({**env, "API_KEYS_DIR": "/srv/keys"})["services"]["api"]["volumes"][0].startswith("/srv/keys:")
    assert (REPO / "compose/keys/.gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]
    for service in ("worker", "webhooks"):  # only the API checks keys
        assert "API_KEYS" not in COMPOSE["services"][service]["environment"]


def _bytes(value: str) -> int:
    """A Compose byte value (``mem_limit``, the json-file ``max-size``) in bytes, read as
    Docker and Podman read them (go-units ``RAMInBytes``): an optional k, m, g, t or p,
    then an optional ``i`` and ``b``, each step 1024; ``4000m`` is 4000 MiB."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)*) ?([kmgtp])?i?b?", str(value), flags=re.I).groups()
    return int(float(number) * 1024 ** (" kmgtp".index(unit.lower()) if unit else 0))


# The most the logs of one container may keep on the host's disk: rotated files included.
LOG_BUDGET = 100 * MIB


def _log_bytes(name: str, logging: dict | None) -> int:
    """The most the json-file logs of service ``name`` keep on the host (max-size times
    max-file); fails for a service that keeps them unbounded: no ``logging:`` block (the
    engine's default json-file never rotates), another driver, or a missing option."""
    assert logging, f"{name} has no logging: block, so its log grows until the disk is full"
    assert logging.get("driver") == "json-file", f"{name} logs with {logging.get('driver')!r}"
    options = logging.get("options") or {}
    assert {"max-size", "max-file"} <= set(options), f"{name}: its json-file log needs max-size and max-file"
    return _bytes(options["max-size"]) * int(options["max-file"])


def test_byte_values_are_read_as_the_engines_read_them():
    assert _bytes("4000m") == 4000 * MIB and _bytes("10m") == 10 * MIB and _bytes("1gb") == 1024 * MIB
    assert _bytes("7.3g") == int(7.3 * 1024 * MIB) and _bytes("512") == 512 and _bytes("2KiB") == 2048


def test_override_files_merge_as_compose_merges_them(tmp_path):
    """The merge the rotation test relies on: an override file replaces what it tags
    ``!override``, drops what it tags ``!reset``, merges mappings key by key and keeps the
    base's logging unless it names another driver. A merge that returned the base alone
    would let an override's new service, or one that drops its logging, pass unseen."""
    assert REPO / "compose/s3-moto.yml" in COMPOSE_OVERRIDES  # found, so the rotation test covers it
    moto = load(REPO / "compose/s3-moto.yml")["services"]
    assert moto["minio"]["image"].startswith("docker.io/motoserver/moto:") and "volumes" not in moto["minio"]
    assert moto["minio"]["healthcheck"]["test"][:2] == ["CMD", "python3"]
    assert moto["minio"]["healthcheck"]["interval"] == "5s"
    assert moto["createbucket"]["entrypoint"][:2] == ["python", "-c"]
    assert {"S3_ENDPOINT", "MINIO_URL", "S3_ACCESS_KEY"} <= set(moto["createbucket"]["environment"])
    override = tmp_path / "override.yml"
    override.write_text("services:\n  redis: {logging: {options: {max-file: '2'}}}\n"
                        "  grafana: {logging: {driver: journald}}\n  api: {logging: !reset null}\n"
                        "  extra: {image: busybox}\n")
    services = load(override)["services"]
    assert services["redis"]["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "2"}}
    assert services["grafana"]["logging"] == {"driver": "journald"}
    assert "logging" not in services["api"] and "logging" not in services["extra"]


@pytest.mark.parametrize("overrides", [(), *[(path,) for path in COMPOSE_OVERRIDES]],
                         ids=lambda files: "+".join(["docker-compose.yml", *(p.name for p in files)]))
def test_every_service_rotates_its_logs_within_a_bound(tmp_path, overrides):
    """Every service, the metrics profile's and each override file's included, keeps at
    most LOG_BUDGET of logs on the host, and all keep the one policy of the file (the
    ``&logging`` anchor), so changing it there changes it everywhere: a chatty worker, or
    a Prometheus left running for months, cannot fill the disk."""
    services = render(generated_env(tmp_path), *overrides)["services"]
    assert {"createbucket", "prometheus", "grafana", "api", "worker", "webhooks"} <= set(services)
    policy = COMPOSE["x-hardened"]["logging"]
    assert _log_bytes("the &logging anchor", policy) <= LOG_BUDGET
    for name, service in services.items():
        kept = _log_bytes(name, service.get("logging"))
        assert kept <= LOG_BUDGET, f"{name} keeps up to {kept // MIB} MiB of logs, more than {LOG_BUDGET // MIB} MiB"
        assert service.get("logging") == policy, f"{name} rotates its logs otherwise than the &logging anchor"


def _container_settings(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container loads whose environment is ``environment``: those
    variables and no other, since a setting left in this test's own environment (say
    M2FP_ENGINE=torch) would change the memory budget the container never sees."""
    for name in list(os.environ):
        if name.lower() in Settings.model_fields:
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, str(value))
    return Settings()


@pytest.mark.parametrize("env", [
    {},  # the file's defaults: WORKER_CPUS=1, WORKER_MEMORY=4000m
    {"WORKER_CPUS": "2", "WORKER_MEMORY": "7.3g"},  # docs/deployment.md: k x 3.4 GiB + 0.5 GiB for k CPUs
], ids=["defaults", "two-cpus"])
def test_each_worker_replica_gets_what_its_resource_plan_needs(tmp_path, monkeypatch, env):
    """The worker's own resource plan (worker/resources.py), fed the replica's limits as
    its cgroup gives them, runs one single-threaded model process per CPU of ``cpus:``, and
    those processes at the code's per-process budget (MODEL_PROCESS_MEMORY_MB, by default
    PROCESS_MEMORY_MB of the engine) plus the main process fit in ``mem_limit``. A raised
    budget or a lowered limit fails here, not as out-of-memory kills of a scaled stack."""
    worker = render({**generated_env(tmp_path), **env})["services"]["worker"]
    cpus = float(worker["cpus"])
    assert cpus == int(cpus) >= 1, f"cpus: {worker['cpus']}: the plan counts whole CPUs, the rest of a quota idles"
    settings = _container_settings(worker["environment"], monkeypatch)
    plan = plan_resources(settings, cpus=int(cpus), memory=_bytes(worker["mem_limit"]))
    # One process per CPU only if that many fit: processes x budget + the main process <= mem_limit.
    assert (plan.concurrency, plan.threads) == (int(cpus), 1), (
        f"{int(cpus)} x {settings.model_process_memory_mb} MiB + {MAIN_PROCESS_MEMORY_MB} MiB do not fit in "
        f"mem_limit {worker['mem_limit']}, or the threads are set: {plan.describe()}")
    assert "WARNING" not in plan.describe()


# Paths that must stay out of the build context, whether or not they exist on this
# machine (a fresh clone has no .env or var/ yet): GBs, secrets, or stale bytecode that
# COPY would put into the image.
KEPT_OUT = {".venv": "the virtualenv", ".venv/lib/python3.10/site-packages/torch/__init__.py": "the virtualenv",
            "var": "job data", "var/jobs/1/labels.png": "job data", "models": "model weights",
            "models/m2fp/pytorch_model.bin": "model weights", ".env": "the stack's secrets",
            "compose/keys/api-keys": "API keys", ".git/config": "git history", "build/lib/x.so": "build output",
            "m2fp_client.egg-info/PKG-INFO": "build output", "tests/data/photo.jpg": "tests",
            "api/__pycache__": "bytecode", "worker/__pycache__/tasks.cpython-310.pyc": "bytecode",
            "common/settings.pyc": "stale bytecode Python imports when its source is gone"}


def _dockerignore_patterns(text: str) -> list[str]:
    """.dockerignore's patterns, read as the Docker SDK's build reads them
    (docker/api/build.py): each line stripped, blank lines and ``#`` comments dropped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _build_sources() -> dict[str, set[str]]:
    """Each path the compose builds' Dockerfiles COPY from or bind-mount from the context,
    with the Dockerfiles that do."""
    sources: dict[str, set[str]] = {}
    for service in COMPOSE["services"].values():
        if "build" not in service:
            continue
        assert service["build"]["context"] == ".", "the context whose .dockerignore this test reads"
        dockerfile = service["build"]["dockerfile"]
        # BuildKit prefers <Dockerfile>.dockerignore to the context's own: none may exist.
        assert not (REPO / f"{dockerfile}.dockerignore").exists(), f"{dockerfile}.dockerignore overrides .dockerignore"
        text = (REPO / dockerfile).read_text()
        copied = re.findall(r"^COPY (\S+) ", text, flags=re.M)
        for source in copied + re.findall(r"--mount=type=bind,source=([^,\s]+)", text):
            sources.setdefault(source.rstrip("/"), set()).add(dockerfile)
    return sources


def _context_problems(patterns: list[str]) -> list[str]:
    """What is wrong with the build context these .dockerignore patterns leave, judged by
    the Docker SDK's own matcher (docker.utils.build.PatternMatcher, a port of Moby's, with
    its walk that skips an excluded directory unless a later ``!`` pattern reaches into it):
    a path of KEPT_OUT that would go in, a file a Dockerfile copies or mounts that would
    not, and anything in the context (on this machine's tree) that no Dockerfile uses.
    The tree is walked only when KEPT_OUT stays out: patterns that let .venv in would
    have the walk read GBs."""
    matcher = PatternMatcher(patterns)
    problems = [f"{path} ({why}) goes into the build context" for path, why in KEPT_OUT.items()
                if not matcher.matches(path)]
    if problems:
        return problems
    context = set(matcher.walk(str(REPO)))
    sources = _build_sources()
    for source, dockerfiles in sorted(sources.items()):
        needed = [source] + [path.relative_to(REPO).as_posix() for path in (REPO / source).rglob("*")
                             if "__pycache__" not in path.parts and path.suffix != ".pyc"]
        problems += [f"{path} is not in the build context, though {sorted(dockerfiles)} use it"
                     for path in needed if path not in context]
    used = {path for path in context if path == ".dockerignore"
            or any(path == source or path.startswith(f"{source}/") for source in sources)}
    problems += [f"{path} is in the build context, though no Dockerfile uses it" for path in sorted(context)
                 if path not in used or "__pycache__" in path.split("/") or path.endswith(".pyc")]
    return problems


def test_the_build_context_holds_what_the_images_use_and_no_secret_or_bulk():
    """The context `docker compose build` sends (every service's is the repository): with
    the repository's .dockerignore it holds each file the Dockerfiles copy or mount, and
    no virtualenv, model, job data, secret, git history or bytecode."""
    patterns = _dockerignore_patterns((REPO / ".dockerignore").read_text())
    assert _context_problems(patterns) == []
    assert _context_problems(patterns + ["!.env"]) == [".env (the stack's secrets) goes into the build context"]


def test_each_line_of_the_dockerignore_keeps_something_out_or_lets_something_in():
    """Without any one of its lines the context is wrong: a line no check misses would be
    a line this test does not guard (add the path it is for to KEPT_OUT)."""
    patterns = _dockerignore_patterns((REPO / ".dockerignore").read_text())
    assert patterns
    for index, pattern in enumerate(patterns):
        assert _context_problems(patterns[:index] + patterns[index + 1:]), f"without {pattern!r} nothing changes"
