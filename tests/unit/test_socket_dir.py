"""Issue 22, item 7: the private directory for sockets (/tmp/rehearse-UID,
used when a state path is too long for a Unix socket) is checked with
lstat and refused, untouched, unless it is the user's own 0700 directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rehearse.core.errors import ExitCode, RehearseError
from rehearse.store import state
from rehearse.store.state import VMDir


def mine(tmp_path: Path) -> Path:
    return tmp_path / f"rehearse-{os.getuid()}"


def refused(base: Path, message: str) -> RehearseError:
    with pytest.raises(RehearseError, match=message) as e:
        state.socket_dir(base)
    assert e.value.exit_code == ExitCode.USAGE and e.value.hint
    return e.value


def test_a_missing_directory_is_made_0700(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = state.socket_dir(tmp_path)
    finally:
        os.umask(old)
    assert made == mine(tmp_path)
    st = os.lstat(made)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert state.socket_dir(tmp_path) == made  # and taken as it is the next time


def test_a_symlink_is_refused_even_to_a_private_directory(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    mine(tmp_path).symlink_to(target)
    refused(tmp_path, "is a symbolic link")
    assert mine(tmp_path).is_symlink() and list(target.iterdir()) == []


def test_a_dangling_symlink_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    mine(tmp_path).symlink_to(tmp_path / "planted")
    refused(tmp_path, "is a symbolic link")
    assert not (tmp_path / "planted").exists()


def test_a_file_is_refused(tmp_path: Path) -> None:
    mine(tmp_path).write_text("")
    refused(tmp_path, "is not a directory")


def test_a_directory_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine(tmp_path).mkdir(mode=0o700)
    owner = os.lstat(mine(tmp_path)).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    refused(tmp_path, f"belongs to another user \\(uid {owner}\\)")


@pytest.mark.parametrize("mode", [0o750, 0o705, 0o1777, 0o711])
def test_a_directory_others_can_reach_is_refused_and_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    mine(tmp_path).mkdir()
    mine(tmp_path).chmod(mode)
    e = refused(tmp_path, f"can be reached by other users \\(mode {mode:o}")
    assert e.hint and "chmod 700" in e.hint
    assert stat.S_IMODE(os.lstat(mine(tmp_path)).st_mode) == mode


def test_a_long_state_path_puts_its_sockets_in_the_checked_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VMDir.socket goes through the check: a link planted in place of the
    directory stops the command before any socket is named."""
    real = state.socket_dir
    monkeypatch.setattr(state, "socket_dir", lambda: real(tmp_path))
    deep = VMDir("fripon", tmp_path / ("x" * 100))
    assert deep.socket("qmp.sock").parent == mine(tmp_path)
    mine(tmp_path).rmdir()
    mine(tmp_path).symlink_to(tmp_path)
    with pytest.raises(RehearseError, match="is a symbolic link"):
        deep.socket("qmp.sock")
