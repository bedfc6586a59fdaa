"""docker-compose.yml as Compose renders it, for machines without a Compose binary.

:func:`interpolate` follows the Compose specification's interpolation chapter
(``$VAR``, ``${VAR}``, ``:-``/``-`` defaults, ``:?``/``?`` required values, ``:+``/``+``
alternatives, nesting inside an operand, ``$$`` for a literal ``$``, anything else after a
``$`` kept as is); :func:`render` applies it to every string value of the file, as Compose
does after YAML parsing (anchors and ``<<`` merges resolved). tests/test_compose.py checks
it against the specification's own examples.

Both take override files (``docker compose -f docker-compose.yml -f compose/s3-moto.yml``),
merged by the specification's merge chapter as far as our files need it: mappings merge
key by key, ``!reset`` drops a value, ``!override`` replaces it whole, the shell commands
(``command``, ``entrypoint``, a healthcheck's ``test``) are replaced, and ``logging`` keeps
the base's options unless the override names another driver. Any other sequence raises
:class:`NotImplementedError` rather than guess which of the specification's rules for
sequences applies.
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


class _Reset:
    """A value tagged ``!reset``: the merge drops what the base file set."""


class _Override:
    """A value tagged ``!override``: the merge replaces the base's value instead of merging."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: safe loading plus the merge tags of override files, which
    ``yaml.safe_load`` refuses."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: _Reset())


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    return _Override(loader.construct_scalar(node))


_ComposeLoader.add_constructor("!override", _construct_override)

# Sequences the specification replaces instead of appending to: the shell commands.
_REPLACED_SEQUENCES = {"command", "entrypoint", "test"}


def _plain(node: Any) -> Any:
    """``node`` without merge tags, as Compose sees a file that is not merged onto another."""
    if isinstance(node, _Override):
        return _plain(node.value)
    if isinstance(node, dict):
        return {key: _plain(value) for key, value in node.items() if not isinstance(value, _Reset)}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


def _merge(base: Any, override: Any, key: str = "") -> Any:
    """``override`` merged onto ``base`` (the value of ``key``), as Compose merges files."""
    if isinstance(override, _Override):
        return _plain(override.value)
    if isinstance(base, dict) and isinstance(override, dict):
        if key == "logging" and override.get("driver", base.get("driver")) != base.get("driver"):
            return _plain(override)  # another driver: the base's options would not apply
        merged = dict(base)
        for name, value in override.items():
            if isinstance(value, _Reset):
                merged.pop(name, None)
            else:
                merged[name] = _merge(base[name], value, name) if name in base else _plain(value)
        return merged
    if isinstance(base, list) and isinstance(override, list) and key not in _REPLACED_SEQUENCES:
        raise NotImplementedError(f"merging the sequence {key!r}: not a rule this harness knows")
    return _plain(override)


def load_file(path: Path) -> dict:
    """A compose file as YAML, variables not yet replaced and merge tags kept for
    :func:`load` (``!reset``, ``!override``)."""
    return yaml.load(path.read_text(), Loader=_ComposeLoader)


def load(*overrides: Path) -> dict:
    """docker-compose.yml as YAML, with ``overrides`` merged onto it in order, variables
    not yet replaced."""
    document = _plain(load_file(COMPOSE_FILE))
    for path in overrides:
        document = _merge(document, load_file(path))
    return document


def render(env: Mapping[str, str], *overrides: Path) -> dict:
    """docker-compose.yml (with ``overrides`` merged onto it) with every variable replaced
    from ``env`` (Compose's view of the files with that shell environment and .env).
    Raises :class:`MissingVariable` for the first required variable ``env`` lacks."""
    return _walk(load(*overrides), env)
