"""docker-compose.yml as Compose renders it, for machines without a Compose binary.

:func:`interpolate` follows the Compose specification's interpolation chapter
(``$VAR``, ``${VAR}``, ``:-``/``-`` defaults, ``:?``/``?`` required values, ``:+``/``+``
alternatives, nesting inside an operand, ``$$`` for a literal ``$``, anything else after a
``$`` kept as is); :func:`render` applies it to every string value of the file, as Compose
does after YAML parsing (anchors and ``<<`` merges resolved). tests/test_compose.py checks
it against the specification's own examples.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class MissingVariable(Exception):
    """A ``${VAR:?message}`` (or ``?``) whose variable is not set: Compose stops here."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"required variable {name} is missing a value: {message}")
        self.name = name
        self.message = message


def _closing_brace(text: str, start: int) -> int:
    """Index of the ``}`` that closes a ``${`` whose body begins at ``start``."""
    depth, index = 1, start
    while index < len(text):
        if text.startswith("$$", index):
            index += 2
            continue
        if text.startswith("${", index):
            depth, index = depth + 1, index + 2
            continue
        if text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def _braced(body: str, env: Mapping[str, str]) -> str:
    name = _NAME.match(body)
    if not name:
        raise ValueError(f"invalid interpolation ${{{body}}}")
    rest = body[name.end():]
    value = env.get(name.group())
    if not rest:
        return value or ""
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise ValueError(f"unsupported interpolation ${{{body}}}")  # e.g. ${VAR/foo/bar}
    operand = rest[len(operator):]
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return value if present else interpolate(operand, env)
    if operator.endswith("?"):
        if not present:
            raise MissingVariable(name.group(), interpolate(operand, env))
        return value
    return interpolate(operand, env) if present else ""  # + and :+


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with every variable reference replaced from ``env``."""
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char != "$":
            out.append(char)
            index += 1
        elif text.startswith("$$", index):
            out.append("$")
            index += 2
        elif text.startswith("${", index):
            end = _closing_brace(text, index + 2)
            out.append(_braced(text[index + 2:end], env))
            index = end + 1
        elif (name := _NAME.match(text, index + 1)):
            out.append(env.get(name.group(), ""))
            index = name.end()
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _walk(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}  # keys are not interpolated
    if isinstance(node, list):
        return [_walk(item, env) for item in node]
    return node


def load() -> dict:
    """docker-compose.yml as YAML, variables not yet replaced."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def render(env: Mapping[str, str]) -> dict:
    """docker-compose.yml with every variable replaced from ``env`` (Compose's view of
    the file with that shell environment and .env). Raises :class:`MissingVariable` for
    the first required variable ``env`` lacks."""
    return _walk(load(), env)
