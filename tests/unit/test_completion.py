"""The completion scripts: each shell accepts its script, and completes what
the parser defines, VM names from the state directory and paths as files."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import pytest
import shtab

from rehearse.commands import cli, completion
from tests.conftest import REPO, run

SUBCOMMANDS = (
    "up",
    "deploy",
    "promote",
    "generations",
    "rollback",
    "snapshot",
    "snapshots",
    "restore",
    "ssh",
    "cp",
    "ssh-config",
    "status",
    "console",
    "down",
    "destroy",
    "completion",
)
VM_COMMANDS = (
    "deploy",
    "promote",
    "generations",
    "rollback",
    "snapshot",
    "snapshots",
    "restore",
    "ssh",
    "ssh-config",
    "console",
    "down",
    "destroy",
)
CHECK = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}


def need(shell: str) -> str:
    path = shutil.which(shell)
    # No skip: a shell missing here would hide a broken script (./run installs them).
    assert path, f"{shell} is not installed (./run installs it: apt-get install {shell})"
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A state root holding VMs alpha and beta, and gamma, a directory without
    state.json (not a VM); a working directory with a configuration in it."""
    root = tmp_path / "state"
    for name in ("alpha", "beta", "gamma"):
        (root / name).mkdir(parents=True)
    (root / "alpha" / "state.json").write_text("{}")
    (root / "beta" / "state.json").write_text("{}")
    (tmp_path / "work" / "machines").mkdir(parents=True)
    (tmp_path / "work" / "configuration.nix").write_text("{ }")
    return tmp_path


def env(home: Path, **extra: str) -> dict[str, str]:
    """The shell's environment: the state root is home/state unless `extra` says otherwise."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "REHEARSE_"))}
    base.update(HOME=str(home), REHEARSE_STATE_DIR=str(home / "state"))
    base.update(extra)
    return base


def write(tmp_path: Path, shell: str, parser: argparse.ArgumentParser | None = None) -> Path:
    path = tmp_path / f"rehearse.{shell}"
    path.write_text(completion.script(parser or cli.parser(), shell))
    return path


def bash_complete(script: Path, home: Path, words: str, setup: str = "", **environ: str) -> list[str]:
    """COMPREPLY for the command line `words` (bash words; the last is the one completed)."""
    code = f"""
        {setup}
        source {script}
        COMP_WORDS=({words})
        COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
        _shtab_rehearse
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    result = run([need("bash"), "--norc", "--noprofile", "-c", code], cwd=home / "work", env=env(home, **environ))
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def fish_complete(script: Path, home: Path, line: str) -> list[str]:
    """The candidates fish offers for `line`, without their descriptions."""
    code = f"source {script}; complete -C {completion._fish_quote(line)}"
    result = run([need("fish"), "--no-config", "-c", code], cwd=home / "work", env=env(home))
    assert result.returncode == 0 and not result.stderr, result.stderr
    return [line.split("\t")[0] for line in result.stdout.splitlines()]


# Completes $2 in an interactive zsh (in a pseudo-terminal: ZLE needs one) with
# $1 on its fpath, and writes the matches to $3, one a line. Each line is sent
# once the shell is ready for it: zsh skips a completion when keys are typed
# ahead. Prompt and message are spelled so that their echo does not match.
ZSH_DRIVER = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=RE''ADY'> '"
zpty -r z out '*READY> *'
zpty -w z "fpath=(${(q)1} \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -r z out '*READY> *'
zpty -w z "compadd() { local -a m; builtin compadd -O m \"\$@\"; print -rl -- \$m >> ${(q)3}; builtin compadd \"\$@\"; }"
zpty -r z out '*READY> *'
zpty -w z "_complete_and_say() { zle complete-word; zle -M COMPLE''TED; }; zle -N _complete_and_say; bindkey '^I' _complete_and_say"
zpty -r z out '*READY> *'
zpty -w -n z "$2"$'\t'
zpty -r z out '*COMPLETED*'
zpty -d z
"""


def zsh_complete(script: Path, home: Path, line: str) -> set[str]:
    fpath = home / "zfunc"
    fpath.mkdir(exist_ok=True)
    (fpath / "_rehearse").write_text(script.read_text())
    driver = home / "drive.zsh"
    driver.write_text(ZSH_DRIVER)
    matches = home / "matches"
    matches.unlink(missing_ok=True)
    result = run([need("zsh"), "-f", driver, fpath, line, matches], cwd=home / "work", env=env(home), timeout=30)
    assert result.returncode == 0, result.stderr
    return set(matches.read_text().split()) if matches.exists() else set()


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_the_shell_accepts_the_script(tmp_path: Path, shell: str) -> None:
    script = write(tmp_path, shell)
    result = run([need(shell), *CHECK[shell][1:], script])
    assert result.returncode == 0 and not result.stderr, result.stderr


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_every_subcommand_is_in_the_script(shell: str) -> None:
    text = completion.script(cli.parser(), shell)
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == set(SUBCOMMANDS)
    for command in SUBCOMMANDS:
        assert command in text, command


def test_vm_name_positionals_are_marked() -> None:
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command in VM_COMMANDS:
        (name,) = [a for a in commands.choices[command]._get_positional_actions() if a.dest == "name"]
        assert name.complete is completion._VM, command  # type: ignore[attr-defined]
    (config,) = [a for a in commands.choices["deploy"]._get_positional_actions() if a.dest == "configuration"]
    assert config.complete is completion._FILE  # type: ignore[attr-defined]
    (target,) = [a for a in commands.choices["up"]._get_positional_actions() if a.dest == "target"]
    assert target.complete is not completion._FILE and target.complete is not completion._VM  # type: ignore[attr-defined]


def test_file_completion_is_shtabs() -> None:
    # _FILE spells out shtab.FILE so that cli.parser() need not import shtab.
    for shell in ("bash", "zsh"):
        assert completion._FILE[shell] == shtab.FILE[shell]


def test_building_the_parser_does_not_import_shtab() -> None:
    code = "import sys, rehearse.commands.cli; rehearse.commands.cli.parser(); assert 'shtab' not in sys.modules, 'imported'"
    result = run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 0, result.stderr


def test_rehearse_completion_prints_the_script() -> None:
    environ = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for shell in completion.SHELLS:
        result = run([sys.executable, "-m", "rehearse", "completion", shell], env=environ)
        assert result.returncode == 0, result.stderr
        assert result.stdout == completion.script(cli.parser(), shell), shell
    result = run([sys.executable, "-m", "rehearse", "completion", "tcsh"], env=environ)
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_unknown_shell_is_refused() -> None:
    with pytest.raises(ValueError, match="tcsh"):
        completion.script(cli.parser(), "tcsh")


@pytest.mark.parametrize("command", VM_COMMANDS)
def test_bash_completes_vm_names_from_the_state_dir(tmp_path: Path, home: Path, command: str) -> None:
    script = write(tmp_path, "bash")
    assert bash_complete(script, home, f'rehearse {command} ""') == ["alpha", "beta"]


def test_bash_completes_the_vm_names_that_start_with_the_word(tmp_path: Path, home: Path) -> None:
    script = write(tmp_path, "bash")
    assert bash_complete(script, home, "rehearse --debug ssh b") == ["beta"]
    assert bash_complete(script, home, "rehearse down x") == []


def test_bash_finds_the_state_root_as_rehearse_does(tmp_path: Path, home: Path) -> None:
    script = write(tmp_path, "bash")
    xdg = home / "xdg"
    (xdg / "rehearse" / "delta").mkdir(parents=True)
    (xdg / "rehearse" / "delta" / "state.json").write_text("{}")
    # An empty REHEARSE_STATE_DIR counts as unset, as in state.state_root().
    assert bash_complete(script, home, 'rehearse ssh ""', REHEARSE_STATE_DIR="", XDG_STATE_HOME=str(xdg)) == ["delta"]
    (home / ".local" / "state" / "rehearse" / "echo").mkdir(parents=True)
    (home / ".local" / "state" / "rehearse" / "echo" / "state.json").write_text("{}")
    assert bash_complete(script, home, 'rehearse ssh ""', REHEARSE_STATE_DIR="") == ["echo"]


def test_bash_without_vms_and_with_failglob(tmp_path: Path, home: Path) -> None:
    # failglob would make the pattern that matches no VM an error on the terminal.
    script = write(tmp_path, "bash")
    words = 'rehearse ssh ""'
    assert bash_complete(script, home, words, "shopt -s failglob", REHEARSE_STATE_DIR=str(home / "none")) == []
    assert bash_complete(script, home, words, "shopt -s failglob nullglob") == ["alpha", "beta"]


def test_bash_completes_configurations_as_files(tmp_path: Path, home: Path) -> None:
    script = write(tmp_path, "bash")
    files = ["configuration.nix", "machines"]
    assert sorted(bash_complete(script, home, 'rehearse deploy alpha ""')) == files
    assert sorted(bash_complete(script, home, 'rehearse up ""')) == ["alpha", "beta", *files]  # VM or configuration
    assert bash_complete(script, home, "rehearse up --ti") == ["--timeout"]
    assert bash_complete(script, home, 'rehearse completion ""') == ["bash", "zsh", "fish"]


def test_fish_completes_vm_names_from_the_state_dir(tmp_path: Path, home: Path) -> None:
    script = write(tmp_path, "fish")
    for command in VM_COMMANDS:
        assert fish_complete(script, home, f"rehearse {command} ") == ["alpha", "beta"], command
    assert fish_complete(script, home, "rehearse down b") == ["beta"]
    # An option's value is no positional: --flake's is skipped, alpha is the name.
    assert fish_complete(script, home, "rehearse deploy --flake .#x ") == ["alpha", "beta"]
    assert fish_complete(script, home, "rehearse ssh alpha ") == []


def test_fish_completes_subcommands_options_and_files(tmp_path: Path, home: Path) -> None:
    script = write(tmp_path, "fish")
    assert set(fish_complete(script, home, "rehearse ")) == set(SUBCOMMANDS)
    assert fish_complete(script, home, "rehearse --debug s") == ["snapshot", "snapshots", "ssh", "ssh-config", "status"]
    assert fish_complete(script, home, "rehearse console --f") == ["--follow"]
    assert fish_complete(script, home, "rehearse completion ") == ["bash", "fish", "zsh"]
    files = ["configuration.nix", "machines/"]
    assert fish_complete(script, home, "rehearse deploy alpha ") == files
    assert fish_complete(script, home, "rehearse up --name x ") == ["alpha", "beta", *files]


def test_zsh_completes_vm_names_and_files(tmp_path: Path, home: Path) -> None:
    script = write(tmp_path, "zsh")
    assert zsh_complete(script, home, "rehearse ssh ") == {"alpha", "beta"}
    assert zsh_complete(script, home, "rehearse destroy a") == {"alpha"}
    assert zsh_complete(script, home, "rehearse deploy alpha ") == {"configuration.nix", "machines"}
    assert set(SUBCOMMANDS) <= zsh_complete(script, home, "rehearse ")


def test_vm_name_and_path_marks_combine(tmp_path: Path, home: Path) -> None:
    """An argument that is a VM name or a configuration completes to both."""
    p = argparse.ArgumentParser(prog="rehearse")
    sub = p.add_subparsers(dest="command")
    target = sub.add_parser("up", help="shtab completes the subcommands that have help").add_argument("target")
    completion.mark_path(target)
    completion.mark_vm_name(target)
    completion.mark_vm_name(target)  # marking twice changes nothing
    both = {"alpha", "beta", "configuration.nix", "machines"}
    assert set(bash_complete(write(tmp_path, "bash", p), home, 'rehearse up ""')) == both
    assert set(fish_complete(write(tmp_path, "fish", p), home, "rehearse up ")) == both - {"machines"} | {"machines/"}
    assert zsh_complete(write(tmp_path, "zsh", p), home, "rehearse up ") == both


def test_fish_places_positionals_by_their_number(tmp_path: Path, home: Path) -> None:
    """Without subcommands too: `pair` takes two words, then `rest` all others."""
    p = argparse.ArgumentParser(prog="rehearse")
    p.add_argument("--level", choices=("low", "high"))
    p.add_argument("pair", nargs=2, choices=("one", "two"))
    completion.mark_vm_name(p.add_argument("rest", nargs="*"))
    script = write(tmp_path, "fish", p)
    assert fish_complete(script, home, "rehearse ") == ["one", "two"]
    assert fish_complete(script, home, "rehearse --level ") == ["high", "low"]
    assert fish_complete(script, home, "rehearse --level low one ") == ["one", "two"]
    assert fish_complete(script, home, "rehearse one two ") == ["alpha", "beta"]
    assert fish_complete(script, home, "rehearse one two alpha -- ") == ["alpha", "beta"]
