"""Every `rehearse …` command the README shows parses as written: its
subcommand, flags and arguments are the ones rehearse takes (issue 24: the
README's examples run as written). Optional parts (`[--json]`) are tried
with and without, alternatives (`--test | --boot`) each."""

from __future__ import annotations

import itertools
import shlex

import pytest

from rehearse.commands import cli
from tests.conftest import REPO


def _commands() -> list[str]:
    found = []
    for line in (REPO / "README.md").read_text().splitlines():
        code = line.strip().removeprefix("$ ")
        if not line.startswith("    ") or not code.startswith(("rehearse ", ".venv/bin/rehearse ")):
            continue  # only the command lines of the indented code blocks
        lexer = shlex.shlex(code, posix=True, punctuation_chars=";&|>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for word in [*lexer, ";"]:
            if word in (";", "&&", ">", ">>"):
                if words and words[0] in ("rehearse", ".venv/bin/rehearse"):
                    found.append(shlex.join(words))
                words = [] if word != ">" and word != ">>" else ["redirected"]
            elif words != ["redirected"]:
                words.append(word)
    return [c.removeprefix(".venv/bin/") for c in found if c.removeprefix(".venv/bin/").startswith("rehearse ")]


PLACEHOLDERS = {"N]": "1]"}  # what a user types for the README's placeholders


def _variants(command: str) -> list[list[str]]:
    """`[x]` with and without; `a | b` as a then b."""
    groups: list[list[list[str]]] = []  # each: its choices, each a list of words
    optional: list[str] | None = None
    for word in shlex.split(command)[1:]:
        word = PLACEHOLDERS.get(word, word)
        if optional is None and word.startswith("["):
            optional = []
        if optional is None:
            groups.append([[word]])
            continue
        optional.append(word.removeprefix("[").removesuffix("]"))
        if word.endswith("]"):
            groups.append([[], optional])
            optional = None
    result = []
    for picked in itertools.product(*groups):
        words = [w for choice in picked for w in choice]
        if "|" in words:
            at = words.index("|")
            result += [words[:at] + words[at + 2 :], words[: at - 1] + words[at + 1 :]]
        else:
            result.append(words)
    return result


COMMANDS = _commands()


def test_the_readme_shows_commands() -> None:
    assert len(COMMANDS) > 40
    assert "rehearse deploy fripon --show-trace" in COMMANDS  # the extraction reads the code blocks


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses_as_written(command: str) -> None:
    for argv in _variants(command):
        try:
            cli.parse(argv)
        except SystemExit as e:  # argparse's usage error
            pytest.fail(f"{command!r} (as {argv}) is not a command rehearse takes: exit {e.code}")
