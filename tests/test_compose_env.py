"""scripts/compose_env.py (``make compose-env``): the .env file docker-compose.yml needs,
written with random secrets, private, and never overwriting what an operator set."""
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import compose_env

NAMES = [secret.name for secret in compose_env.SECRETS]


def run(env_file: Path, **env: str) -> subprocess.CompletedProcess:
    """The script as ``make compose-env`` runs it: a plain interpreter without
    site-packages (-I -S), as on a compose host with no virtualenv."""
    return subprocess.run([sys.executable, "-I", "-S", str(compose_env.__file__), "--env-file", str(env_file)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], **env})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_first_run_writes_every_secret_strong_random_and_private(tmp_path):
    env_file = tmp_path / ".env"
    done = run(env_file)
    assert done.returncode == 0, done.stderr
    assert mode(env_file) == 0o600
    values = compose_env.read_values(env_file.read_text())
    assert list(values) == NAMES
    passwords = [values[name] for name in NAMES if name not in ("MINIO_ROOT_USER", "S3_ACCESS_KEY")]
    assert all(len(password) >= 40 for password in passwords) and len(set(passwords)) == len(passwords)
    assert values["S3_ACCESS_KEY"] != values["MINIO_ROOT_USER"]
    assert not [password for password in passwords if password in done.stdout + done.stderr]  # never printed
    other = tmp_path / "other.env"
    assert run(other).returncode == 0
    assert not set(passwords) & set(compose_env.read_values(other.read_text()).values())  # random, not fixed


def test_values_already_set_stay_and_only_missing_ones_are_added(tmp_path):
    env_file = tmp_path / ".env"
    original = ("# mine\n"
                "REDIS_PASSWORD=my-own-redis-password\n"
                "export MINIO_ROOT_PASSWORD='rotated-root-password'\n"
                "API_KEYS=acme:k-1\n"
                "GRAFANA_ADMIN_PASSWORD=\n")
    env_file.write_text(original)
    env_file.chmod(0o600)
    assert run(env_file).returncode == 0
    text = env_file.read_text()
    lines = text.splitlines()
    for line in original.splitlines()[:4]:
        assert line in lines  # byte for byte
    values = compose_env.read_values(text)
    assert values["REDIS_PASSWORD"] == "my-own-redis-password"
    assert values["MINIO_ROOT_PASSWORD"] == "rotated-root-password"
    assert values["GRAFANA_ADMIN_PASSWORD"]  # empty is not set: filled in on its own line
    assert [line.split("=")[0] for line in lines].count("GRAFANA_ADMIN_PASSWORD") == 1
    assert set(NAMES) <= set(values)
    again = run(env_file)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert env_file.read_text() == text


def test_an_existing_file_readable_by_others_is_made_private(tmp_path):
    env_file = tmp_path / ".env"
    assert run(env_file).returncode == 0
    text = env_file.read_text()
    env_file.chmod(0o644)
    assert run(env_file).returncode == 0
    assert mode(env_file) == 0o600 and env_file.read_text() == text


@pytest.mark.parametrize("content, fix", [
    ("MINIO_ROOT_USER=m2fp-service\n", "must not use MinIO's root login"),  # the generated service user
    ("MINIO_ROOT_USER=admin\nS3_ACCESS_KEY=admin\n", "must not use MinIO's root login"),
    ("REDIS_PASSWORD=p@ss/word\n", "part of REDIS_URL"),
    ("S3_SECRET_KEY=short\n", "at least 8 characters"),
])
def test_values_that_cannot_work_are_refused_with_the_fix_and_the_file_kept(tmp_path, content, fix):
    env_file = tmp_path / ".env"
    env_file.write_text(content)
    done = run(env_file)
    assert done.returncode == 2 and fix in done.stderr, done.stderr
    assert env_file.read_text() == content


def test_a_secret_set_in_the_shell_is_pointed_out(tmp_path):
    """Compose takes a shell variable over .env: say so, or the operator rotates one in .env
    that never takes effect."""
    done = run(tmp_path / ".env", REDIS_PASSWORD="from-the-shell")
    assert done.returncode == 0 and "REDIS_PASSWORD set in this shell" in done.stderr
