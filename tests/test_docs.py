"""The manual's own checks: every relative link resolves inside the repository, the
commands it names exist, the configuration page is current, the README stays short."""
from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from m2fp_client.cli import main as m2fp_cli
from scripts import config_doc

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 200
REGENERATE = "run python -m scripts.config_doc > docs/configuration.md"

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HTML_LINK = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']""", re.I)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
# Paths that exist on no reader's machine: this checkout's location, the sibling folder
# the project was built beside.
FOREIGN_PATHS = ("/work/", "../shared")


def manual() -> list[Path]:
    return [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans (links there are not links)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    """Every link target of a markdown text: inline, reference-style and HTML."""
    body = prose(text)
    return INLINE_LINK.findall(body) + REFERENCE_LINK.findall(body) + HTML_LINK.findall(body)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text in lower case, punctuation
    dropped (but ``-`` and ``_``), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*|_(?=\W|$)|(?<=\W)_)", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors GitHub makes for a page's headings; a repeated one gets -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for _, heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """What is wrong with each relative link of ``page``, in words (empty: all good)."""
    problems = []
    text = page.read_text()
    for target in links(text):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a web address, mailto: ...
        path_part, _, anchor = target.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{target}: an absolute path, which no reader's checkout has")
            continue
        destination = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not destination.is_relative_to(root.resolve()):
            problems.append(f"{target}: points outside the repository")
            continue
        if not destination.exists():
            problems.append(f"{target}: {destination.relative_to(root.resolve())} does not exist")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination.read_text()):
            problems.append(f"{target}: no heading of {destination.name} has the anchor #{anchor}")
    return problems


def foreign_paths(text: str) -> list[str]:
    return [f"{path!r} in: {line.strip()}" for line in text.splitlines() for path in FOREIGN_PATHS if path in line]


@pytest.mark.parametrize("page", manual(), ids=lambda page: str(page.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", manual(), ids=lambda page: str(page.relative_to(REPO)))
def test_no_path_outside_the_repository(page):
    assert foreign_paths(page.read_text()) == []


def test_the_link_checker_catches_what_it_is_for(tmp_path):
    """The checks above would pass on an empty list; this shows each kind of fault found."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## The `make run` step\n\n## Same\n\n## Same\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#the-make-run-step) [ok](other.md#same-1) [ok](#a-heading)\n"
        "[web](https://example.com/x) `[code](missing.md)`\n\n# A heading\n\n"
        "[gone](missing.md) [bad anchor](other.md#nowhere) [escape](../../etc/passwd)\n"
        "[abs](/work/main/README.md)\n")
    problems = broken_links(page, root=tmp_path)
    assert [problem.split(":")[0] for problem in problems] == [
        "missing.md", "other.md#nowhere", "../../etc/passwd", "/work/main/README.md"]
    assert foreign_paths("see ../shared/ENGINE.md\nfine\nat /work/main") == [
        "'../shared' in: see ../shared/ENGINE.md", "'/work/' in: at /work/main"]


def test_github_slugs():
    assert slug("Licence: read this before you use the model") == "licence-read-this-before-you-use-the-model"
    assert slug("Without network access: synthetic weights") == "without-network-access-synthetic-weights"
    assert slug("The web page's browser test") == "the-web-pages-browser-test"
    assert slug("`make bench` on Zen 4") == "make-bench-on-zen-4"


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), re.M))


def code_of(text: str) -> list[str]:
    """The lines of code blocks and code spans, where commands are written."""
    chunks = [match.group(0) for match in FENCE.finditer(text)]
    chunks += [match.group(2) for match in CODE_SPAN.finditer(FENCE.sub("", text))]
    return [line for chunk in chunks for line in chunk.splitlines()]


def unknown_make_targets(text: str) -> set[str]:
    named = {target for line in code_of(text) for target in re.findall(r"(?:^|[\s$;(&|])make ([a-z][a-z0-9-]*)", line)}
    return named - makefile_targets()


def cli_options(command: click.Command) -> set[str]:
    return {option for param in command.params for option in (*param.opts, *param.secondary_opts)}


def unknown_m2fp_calls(text: str) -> list[str]:
    """Each ``m2fp`` command or option the text's code names that the CLI does not have."""
    group_options = cli_options(m2fp_cli)
    wrong = []
    for line in code_of(text):
        for call in re.findall(r"(?:^|(?<=[\s$])|(?<=bin/))m2fp\s+([^|;&`]*)", line):
            words = call.split()
            while words and words[0].startswith("--"):  # the group's own options first
                words = words[2:] if words[0] in group_options and "=" not in words[0] else words[1:]
            if not words or words[0] in {"...", "…"}:
                continue
            command = m2fp_cli.commands.get(words[0])
            if command is None:
                wrong.append(f"m2fp {words[0]}: no such command")
                continue
            for word in words[1:]:
                option = word.lstrip("[(").split("=", 1)[0].rstrip("]),.")
                if option == "--":  # the end of the options: what follows is arguments
                    break
                if option.startswith("--") and option not in cli_options(command) | group_options:
                    wrong.append(f"m2fp {words[0]} {option}: no such option")
    return wrong


def test_the_command_checks_catch_what_they_are_for():
    text = ("```sh\nmake run\nmake no-such-target\n.venv/bin/m2fp submit a.jpg --wait --no-such-flag\n"
            "curl -F webhook=https://example.com/m2fp -F image=@a.jpg\n```\n"
            "`m2fp --api-url URL frobnicate ID` and `m2fp status ID --api-url URL` and `m2fp status -- -id`\n")
    assert unknown_make_targets(text) == {"no-such-target"}
    assert unknown_m2fp_calls(text) == ["m2fp submit --no-such-flag: no such option", "m2fp frobnicate: no such command"]


@pytest.mark.parametrize("page", manual(), ids=lambda page: str(page.relative_to(REPO)))
def test_every_make_target_named_exists(page):
    assert unknown_make_targets(page.read_text()) == set(), "the Makefile has no such target"


@pytest.mark.parametrize("page", manual(), ids=lambda page: str(page.relative_to(REPO)))
def test_every_m2fp_command_and_option_named_exists(page):
    assert unknown_m2fp_calls(page.read_text()) == []


def test_the_configuration_page_is_current():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert page == config_doc.render(), f"docs/configuration.md is out of date: {REGENERATE}"


def test_every_setting_has_a_description():
    assert config_doc.UNDOCUMENTED not in config_doc.render(), (
        "a setting has no description: write a comment above it in common/settings.py "
        f"(or an entry in scripts/config_doc.py's DESCRIPTIONS), then {REGENERATE}")


def test_the_configuration_page_names_every_setting_with_its_default():
    page = (REPO / "docs" / "configuration.md").read_text()
    for name, field in config_doc.Settings.model_fields.items():
        [row] = [line for line in page.splitlines() if line.startswith(f"| `{name.upper()}` |")]
        assert config_doc.default_text(name, field) in row
    # The budget per model process is derived from the engine, and the page says so.
    for engine, megabytes in config_doc.PROCESS_MEMORY_MB.items():
        assert f"{megabytes} ({engine})" in page


def test_the_readme_is_a_short_front_door():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    # CI (.ci/run) runs the README's test command: it must stay `make test`.
    assert "make test" in readme and "make test" in (REPO / ".ci" / "run").read_text()
