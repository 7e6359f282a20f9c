# Activation step `etc`, as NixOS's setup-etc does it, for the rig's Debian
# guest: point /etc/static at the new system's etc tree, link every entry
# into /etc (or copy it when the entry has a mode), and remove what the
# previous generation put there and the new one no longer has.
# Runs with the guest's python3, which may be a minimal one (no json).
import os
import sys

STATIC = "/etc/static"
CLEAN = "/etc/.clean"


def atomic_symlink(target: str, link: str) -> None:
    tmp = f"{link}.tmp-{os.getpid()}"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def entries(root: str) -> list[str]:
    """The entries of an etc tree: its symlinks, relative to the root.
    Directories of the tree are real directories; entries are symlinks."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                found.append(os.path.relpath(path, root))
    return found


def remove_stale_links() -> None:
    """Remove links into /etc/static whose target the new tree lacks."""
    for dirpath, dirnames, filenames in os.walk("/etc"):
        if dirpath == "/etc":
            dirnames[:] = [d for d in dirnames if d != "static"]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and os.readlink(path).startswith(STATIC + "/") and not os.path.exists(path):
                os.unlink(path)


def ids(path: str) -> dict:
    """Name → id of /etc/passwd or /etc/group."""
    found = {}
    with open(path) as f:
        for line in f:
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                found[fields[0]] = int(fields[2])
    return found


def owner(value: str, table: dict, rel: str) -> int:
    """An entry's user or group as NixOS's setup-etc.pl reads it: +N is the
    id N, anything else a name; a name no account has is 0 (Perl's
    int(undef)), with a warning."""
    if value.startswith("+"):
        return int(value[1:])
    if value not in table:
        print(f"warning: /etc/{rel}: no user or group named '{value}'; using 0", file=sys.stderr)
    return table.get(value, 0)


def install(rel: str, meta: dict) -> None:
    target = os.path.join("/etc", rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if meta.get("mode", "symlink") == "symlink":
        want = os.path.join(STATIC, rel)
        if os.path.islink(target) and os.readlink(target) == want:
            return
        if os.path.isdir(target) and not os.path.islink(target):
            print(f"warning: /etc/{rel} is a directory; not replacing it", file=sys.stderr)
            return
        atomic_symlink(want, target)
        return
    with open(os.path.join(STATIC, rel), "rb") as src:
        data = src.read()
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "wb") as dst:
        dst.write(data)
    os.chmod(tmp, int(meta["mode"], 8))
    os.chown(tmp, owner(meta["user"], ids("/etc/passwd"), rel), owner(meta["group"], ids("/etc/group"), rel))
    os.replace(tmp, target)


def main() -> None:
    new_etc = sys.argv[1]
    atomic_symlink(new_etc, STATIC)
    remove_stale_links()
    meta = {}
    with open(os.path.join(new_etc, ".rig-etc-modes")) as f:
        for line in f:
            target, mode, user, group = line.rstrip("\n").split("\t")
            meta[target] = {"mode": mode, "user": user, "group": group}
    copied = []
    for rel in entries(new_etc):
        m = meta.get(rel, {})
        install(rel, m)
        if m.get("mode", "symlink") != "symlink":
            copied.append(rel)
    # Files copied by the previous generation and not by this one go.
    try:
        with open(CLEAN) as f:
            old = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        old = []
    for rel in set(old) - set(copied):
        try:
            os.unlink(os.path.join("/etc", rel))
        except FileNotFoundError:
            pass
    with open(CLEAN + ".tmp", "w") as f:
        f.write("".join(r + "\n" for r in sorted(copied)))
    os.replace(CLEAN + ".tmp", CLEAN)


main()
