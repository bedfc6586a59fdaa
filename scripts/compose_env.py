"""Write the secrets docker-compose.yml requires into ``.env`` beside it (``make compose-env``).

docker-compose.yml has no default for any secret, so the stack refuses to start until
each is set. This script sets the missing ones to strong random values, in the file
Compose reads by itself, readable by its owner only (0600). A value already in the file
is never changed, so running it again is safe, and a secret of your own (or one you
rotated) stays. It needs only the standard library: a compose host has no virtualenv.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets
import stat
import sys
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple, Optional

REPO = Path(__file__).resolve().parent.parent
ENV_FILE = REPO / ".env"


def _token() -> str:
    # 256 bits, URL-safe characters only: REDIS_URL carries REDIS_PASSWORD as is.
    return secrets.token_urlsafe(32)


class Secret(NamedTuple):
    name: str
    make: Callable[[], str]
    comment: str


# Every variable docker-compose.yml requires (``${NAME:?...}``); tests/test_compose.py
# checks this list against the file.
SECRETS: tuple[Secret, ...] = (
    Secret("MINIO_ROOT_USER", lambda: "m2fp-root", "MinIO's root login: MinIO and its set-up only"),
    Secret("MINIO_ROOT_PASSWORD", _token, ""),
    Secret("S3_ACCESS_KEY", lambda: "m2fp-service",
           "The MinIO user of the API and workers, limited to their bucket (compose/minio/init.sh)"),
    Secret("S3_SECRET_KEY", _token, ""),
    Secret("REDIS_PASSWORD", _token, "Redis requirepass; URL-safe characters only (it is part of REDIS_URL)"),
    Secret("GRAFANA_ADMIN_PASSWORD", _token,
           "Grafana's admin password (--profile metrics); read when Grafana first creates its database"),
)

# KEY=value as Compose's .env has it (an ``export`` prefix is accepted).
_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]+$")


def _value(raw: str) -> str:
    """The value of one line, enough to tell set from empty: quotes and a trailing
    comment of an unquoted value removed."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return "" if raw.startswith("#") else re.split(r"\s+#", raw, maxsplit=1)[0]


def read_values(text: str) -> dict[str, str]:
    """The variables a .env text sets (the last line of a name wins, as in Compose)."""
    values = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            values[match.group(1)] = _value(match.group(2))
    return values


def check(values: dict[str, str]) -> list[str]:
    """What is wrong with the secrets as set, each naming the fix (empty: nothing)."""
    problems = []
    for name in ("MINIO_ROOT_USER", "S3_ACCESS_KEY"):
        if name in values and len(values[name]) < 3:
            problems.append(f"{name} must have at least 3 characters (MinIO's minimum): change it in .env")
    for name in ("MINIO_ROOT_PASSWORD", "S3_SECRET_KEY"):
        if name in values and len(values[name]) < 8:
            problems.append(f"{name} must have at least 8 characters (MinIO's minimum): change it in .env, "
                            "or delete its line and run make compose-env again")
    if values.get("S3_ACCESS_KEY") and values.get("S3_ACCESS_KEY") == values.get("MINIO_ROOT_USER"):
        problems.append("S3_ACCESS_KEY equals MINIO_ROOT_USER: the services must not use MinIO's root login; "
                        "delete the S3_ACCESS_KEY and S3_SECRET_KEY lines and run make compose-env again")
    password = values.get("REDIS_PASSWORD")
    if password and not _URL_SAFE.match(password):
        problems.append("REDIS_PASSWORD may hold only letters, digits and - . _ ~ (it is part of REDIS_URL): "
                        "change it in .env, or delete its line and run make compose-env again")
    return problems


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step, mode 0600 from the first byte."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".env.", suffix=".tmp")  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def ensure_env_file(path: Path = ENV_FILE) -> list[str]:
    """Give every secret in :data:`SECRETS` a value in ``path``, creating the file if need
    be; values already there stay. Returns the names that were added. Raises
    ``ValueError`` naming the fix when the values (those there and the new ones together)
    cannot work; the file is then left as it was."""
    text = path.read_text() if path.exists() else ""
    values = read_values(text)
    added = {secret.name: secret.make() for secret in SECRETS if not values.get(secret.name)}
    problems = check({**values, **added})
    if problems:
        raise ValueError("\n".join(problems))
    lines = text.splitlines()
    # A name that is there with an empty value gets its value on its own line.
    for index, line in enumerate(lines):
        match = _LINE.match(line)
        if match and match.group(1) in added and match.group(1) in values:
            lines[index] = f"{match.group(1)}={added[match.group(1)]}"
    if not text:
        lines += ["# Secrets of docker-compose.yml, written by make compose-env (scripts/compose_env.py).",
                  "# Keep this file private (mode 0600) and out of version control."]
    for secret in SECRETS:
        if secret.name in added and secret.name not in values:
            lines += [f"# {secret.comment}"] if secret.comment else []
            lines.append(f"{secret.name}={added[secret.name]}")
    if added:
        _write_private(path, "\n".join(lines) + "\n")
    elif stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)  # the secrets were readable by others
    return list(added)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=ENV_FILE,
                        help="the file to write (default: .env beside docker-compose.yml, where Compose reads it)")
    args = parser.parse_args(argv)
    try:
        added = ensure_env_file(args.env_file)
    except ValueError as error:
        print(f"{args.env_file}: {error}", file=sys.stderr)
        return 2
    if added:
        print(f"{args.env_file}: generated {', '.join(added)} (mode 0600)")
    else:
        print(f"{args.env_file}: every secret already set; nothing changed")
    shadowed = [secret.name for secret in SECRETS if os.environ.get(secret.name)]
    if shadowed:
        print(f"note: {', '.join(shadowed)} set in this shell; Compose takes the shell's value over .env",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
