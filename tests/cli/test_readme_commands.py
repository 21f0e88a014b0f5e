"""The README's command table documents the CLI as `--help` shows it: one row per command, naming
every option of that command, and no option the command does not have.

The truth is the click command tree that typer builds from `nasplat.cli.main.app`, walked here, so
a new command or option fails this test until its row says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
import typer.core

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## The command line"
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _commands() -> tuple[dict[str, list[str]], set[str]]:
    """({"nasplat latency profile": ["--out", "--backend", ...], ...}, the group paths) for the
    root and every command and group below it: the long names of the options their `--help` shows
    (not `--help` itself)."""
    from nasplat.cli.main import app

    found: dict[str, list[str]] = {}
    groups: set[str] = set()

    def walk(command: typer.core.TyperCommand | typer.core.TyperGroup, path: str) -> None:
        found[path] = [name for p in command.params if p.param_type_name == "option" and not p.hidden
                       for name in (*p.opts, *p.secondary_opts) if name.startswith("--") and name != "--help"]
        if isinstance(command, typer.core.TyperGroup):
            groups.add(path)
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(app), "nasplat")
    return found, groups


COMMANDS, GROUPS = _commands()
# A row per command, and per group that has options of its own; the root's options are global
# and named in the prose under the table.
DOCUMENTED = sorted(p for p in COMMANDS if p != "nasplat" and (p not in GROUPS or COMMANDS[p]))


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else None]


def _table() -> dict[str, list[tuple[str, str]]]:
    """The command table's rows by the command path their usage starts with: the longest known
    command path that is a prefix of the usage's words. Each row is (usage, whole row)."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in _section().splitlines():
        cells = re.split(r"(?<!\\)\|", line)
        usage = cells[1].strip().strip("`").replace("\\|", "|") if len(cells) >= 3 else ""
        words = usage.split()
        if not words or words[0] != "nasplat":
            continue
        path = max((c for c in COMMANDS if words[: len(c.split())] == c.split()), key=len)
        rows.setdefault(path, []).append((usage, line))
    return rows


def _documented(option: str, text: str) -> bool:
    return option in _OPTION.findall(text)


def test_the_walk_finds_the_commands_and_options_help_shows():
    assert {"--version", "--verbose"} <= set(COMMANDS["nasplat"])
    assert {"--out", "--repeats", "--calibration"} <= set(COMMANDS["nasplat latency profile"])
    assert "--help" not in COMMANDS["nasplat predict"]


@pytest.mark.parametrize("path", DOCUMENTED)
def test_every_command_has_one_row_naming_each_of_its_options(path):
    rows = _table().get(path, [])
    assert len(rows) == 1, f"`{path}` has {len(rows)} rows in the README's command table ({SECTION}); want one"
    ((_, row),) = rows
    missing = [o for o in COMMANDS[path] if not _documented(o, row)]
    assert not missing, f"the README's row of `{path}` does not name {', '.join(missing)} (see `{path} --help`)"


def test_the_global_options_are_named_in_the_command_line_section():
    section = _section()
    missing = [o for o in COMMANDS["nasplat"] if not _documented(o, section)]
    assert not missing, f"README's {SECTION!r} does not name the global option(s) {', '.join(missing)}"


def test_every_row_is_a_command_and_its_usage_names_only_its_own_options():
    rows = _table()
    assert rows, f"no command table found under {SECTION!r} in {README}"
    for path, entries in rows.items():
        for usage, _ in entries:
            allowed = set(COMMANDS[path]) | set(COMMANDS["nasplat"]) | {"--help"}
            unknown = [o for o in _OPTION.findall(usage) if o not in allowed]
            assert not unknown, f"the README's usage `{usage}` names {', '.join(unknown)}, which `{path}` does not have"
