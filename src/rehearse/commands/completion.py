"""Shell completion scripts for bash, zsh and fish, generated from the
argument parser so they never drift from it.

bash and zsh come from shtab (as nixos-rebuild-ng's do); fish from a small
generator here, since shtab has fish only from 1.9 on and the floor is 1.7
(the fish values in `complete` are in shtab's form, so switching is easy). VM
names complete from the state directory in each shell's own code: a <Tab>
starts no Python.

cli.parser() runs at every start of rehearse, so marking an argument
(mark_vm_name, mark_path) must stay cheap: shtab is imported by script() only.
"""

from __future__ import annotations

import argparse
import re
from typing import Final

SHELLS: Final = ("bash", "zsh", "fish")

# What an argument completes to, in shtab's `action.complete` form (a function
# per shell). The fish values are what `complete -a` takes, the form shtab's
# own fish support uses too. _FILE is shtab.FILE, spelled out so that marking
# does not import shtab; a test holds the two equal.
_FISH_FILES: Final = "__fish_complete_path (commandline -ct)"
_VM: Final = {"bash": "_rehearse_vms", "zsh": "_rehearse_vms", "fish": "(__rehearse_vms)"}
_FILE: Final = {"bash": "_shtab_compgen_files", "zsh": "_files", "fish": f"({_FISH_FILES})"}
_VM_OR_FILE: Final = {
    "bash": "_rehearse_vms_or_files",
    "zsh": "_rehearse_vms_or_files",
    "fish": f"(__rehearse_vms; {_FISH_FILES})",
}
_KINDS: Final = {
    frozenset({"vm"}): _VM,
    frozenset({"file"}): _FILE,
    frozenset({"vm", "file"}): _VM_OR_FILE,
}

# The VMs are the directories of the state root that hold a state.json, the
# root found as state.state_root() finds it: REHEARSE_STATE_DIR, else
# ${XDG_STATE_HOME:-~/.local/state}/rehearse (an empty variable counts as unset
# there too, hence `:-`).
_BASH: Final = r"""
# rehearse's VMs starting with $1. A subshell, so that the user's failglob
# (an error on no VM) and nullglob settings stay theirs.
_rehearse_vms() (
  shopt -u failglob
  shopt -s nullglob
  local root="${REHEARSE_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/rehearse}" f name
  for f in "$root"/*/state.json; do
    name=${f%/state.json}
    name=${name##*/}
    [[ $name == "$1"* ]] && printf '%s\n' "$name"
  done
  return 0
)

_rehearse_vms_or_files() {
  _rehearse_vms "$1"
  _shtab_compgen_files "$1"
}
"""

_ZSH: Final = r"""
_rehearse_vms() {
  local root=${REHEARSE_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/rehearse}
  # (N): no VM is an empty list, not an error; :h:t: the directory's name
  local -a vms
  vms=( "$root"/*/state.json(N:h:t) )
  _wanted vms expl VM compadd -a vms
}

_rehearse_vms_or_files() {
  _alternative 'vms:VM:_rehearse_vms' 'files:file:_files'
}
"""

_FISH: Final = r"""
function __rehearse_vms --description "rehearse's VMs"
    set -l root $REHEARSE_STATE_DIR
    if test -z "$root"
        set root $XDG_STATE_HOME
        test -z "$root"; and set root $HOME/.local/state
        set root $root/rehearse
    end
    # In `set`, a pattern that matches nothing is an empty list, not an error.
    set -l found $root/*/state.json
    string replace -r '^.*/([^/]+)/state\.json$' '$1' -- $found
end

# Whether the command line before the cursor is at subcommand $argv[1] ('' for
# none yet) and, given $argv[2], at its positional argument number $argv[2]
# (from 0; `N+` for N or later). Options are skipped, with the value that
# follows those listed in __rehearse_value_options ("SUBCOMMAND OPTION"); the
# subcommands are those in __rehearse_commands.
function __rehearse_at --argument-names want_cmd want_index
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l cmd ''
    set -l index 0
    set -l skip 0
    set -l options 1
    for t in $tokens
        if test $skip = 1
            set skip 0
            continue
        end
        if test $options = 1
            if test "$t" = --
                set options 0
                continue
            end
            if string match -q -- '-?*' $t
                contains -- "$cmd $t" $__rehearse_value_options; and set skip 1
                continue
            end
        end
        if test -z "$cmd"; and contains -- $t $__rehearse_commands
            set cmd $t
            set index 0
        else
            set index (math $index + 1)
        end
    end
    test "$cmd" = "$want_cmd"; or return 1
    switch "$want_index"
        case ''
            return 0
        case '*+'
            test $index -ge (string trim -r -c + -- $want_index)
        case '*'
            test $index -eq $want_index
    end
end
"""


def mark_vm_name(action: argparse.Action) -> None:
    """`action` (a positional or an option's value) completes to VM names."""
    _mark(action, "vm")


def mark_path(action: argparse.Action) -> None:
    """`action` completes to paths. With mark_vm_name too, to either."""
    _mark(action, "file")


def _mark(action: argparse.Action, kind: str) -> None:
    current = getattr(action, "complete", None)
    kinds = next((k for k, v in _KINDS.items() if v is current), frozenset[str]())
    # `complete` is shtab's protocol: its generators read it off the action.
    action.complete = _KINDS[kinds | {kind}]  # type: ignore[attr-defined]


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of `parser` for `shell` (one of SHELLS)."""
    if shell == "fish":
        return _fish(parser)
    if shell not in ("bash", "zsh"):
        raise ValueError(f"no completion for shell {shell!r}")
    import shtab

    text = shtab.complete(parser, shell, preamble=_BASH if shell == "bash" else _ZSH)
    return text.rstrip("\n") + "\n"  # a file's last line ends, as in fish's


def _fish(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    completions: list[str] = []
    commands: list[str] = []
    value_options: list[str] = []

    def add(condition: str, *spec: str) -> None:
        completions.append(" ".join(["complete", "-c", prog, "-n", _fish_quote(condition), *spec]))

    def arguments(p: argparse.ArgumentParser, cmd: str) -> None:
        """The completions of `p`'s options and positionals, `p` being the
        parser of subcommand `cmd` ('' for the top level)."""
        in_cmd = f"__rehearse_at {_fish_quote(cmd)}"
        for action in p._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            spec = [_fish_option(o) for o in action.option_strings]
            if action.nargs != 0:  # takes a value
                value_options.extend(f"{cmd} {o}" for o in action.option_strings)
                # -x: a value is required, and it is no file (fish would offer
                # files besides -a's candidates otherwise); paths come from -a.
                spec.append("-x")
                if values := _fish_values(action):
                    spec.extend(["-a", _fish_quote(values)])
            add(in_cmd, *spec, *_fish_help(p, action))

        index = 0
        for action in p._get_positional_actions():
            if isinstance(action, argparse._SubParsersAction):
                if cmd:
                    raise ValueError(f"fish completion: {cmd!r} has subcommands; only the top level can")
                # As shtab does for bash and zsh: a subcommand added without
                # help (or with SUPPRESS) is hidden. Aliases share a parser.
                helps = {id(action.choices[a.dest]): a.help for a in action._get_subactions()}
                for name, sub in action.choices.items():
                    text = helps.get(id(sub), argparse.SUPPRESS)
                    if text == argparse.SUPPRESS:
                        continue
                    commands.append(name)
                    add(f"{in_cmd} {index}", "-a", _fish_quote(name), *(["-d", _fish_quote(text)] if text else []))
                    arguments(sub, name)
                break  # the subcommand's parser takes the rest of the line
            open_ended = action.nargs in (argparse.REMAINDER, argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE)
            width = action.nargs if isinstance(action.nargs, int) else 1
            if action.help != argparse.SUPPRESS and (values := _fish_values(action)):
                # REMAINDER, * and +: this positional's words are all the rest.
                slots = [f"{index}+"] if open_ended else [str(i) for i in range(index, index + width)]
                for slot in slots:
                    add(f"{in_cmd} {slot}", "-a", _fish_quote(values), *_fish_help(p, action))
            if open_ended:
                break  # where the positionals after it begin is not known
            index += width

    arguments(parser, "")
    lines = [
        f"# fish completion for {prog}, generated from its argument parser: `{prog} completion fish`",
        _FISH,
        "set -g __rehearse_commands " + " ".join(_fish_quote(c) for c in commands),
        "set -g __rehearse_value_options " + " ".join(_fish_quote(o) for o in value_options),
        f"complete -c {prog} -e",  # when sourced again, these replace the old definitions
        f"complete -c {prog} -f",  # paths only where an argument is one
        *completions,
    ]
    return "\n".join(lines) + "\n"


def _fish_values(action: argparse.Action) -> str:
    """What `complete -a` offers for `action`'s value: its choices or its mark."""
    complete = getattr(action, "complete", None)
    if isinstance(complete, dict) and isinstance(complete.get("fish"), str):
        return str(complete["fish"])
    if action.choices is not None:
        return " ".join(_fish_quote(str(c)) for c in action.choices)
    return ""


def _fish_option(option: str) -> str:
    if option.startswith("--"):
        return f"-l {_fish_quote(option[2:])}"
    if len(option) == 2:
        return f"-s {_fish_quote(option[1:])}"
    return f"-o {_fish_quote(option[1:])}"  # old style, e.g. -name


def _fish_help(p: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    if not action.help:
        return []
    # The formatter expands %(default)s and the like, as --help shows them.
    text = p._get_formatter()._expand_help(action)
    return ["-d", _fish_quote(" ".join(text.split()))]


def _fish_quote(text: str) -> str:
    """`text` as one fish word, quoted only as much as it needs (the script is
    meant to be read): single quotes, in which only \\ and ' are special, or
    double quotes around a ' where nothing else is special."""
    if re.fullmatch(r"[A-Za-z0-9_@+=:,./-]+", text):
        return text
    if "'" not in text:
        return f"'{text}'"
    if not any(c in text for c in '"$\\'):
        return f'"{text}"'
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
