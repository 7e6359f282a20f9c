# Activation step of users.users / users.groups in the rig's Debian guest:
# create missing groups and users, and set declared password hashes (always
# when users.mutableUsers is false, only at creation otherwise, as NixOS does).
import json
import pwd
import grp
import subprocess
import sys

spec = json.load(open(sys.argv[1]))


def run(*argv: str) -> None:
    subprocess.run(argv, check=True)


for g in spec["groups"]:
    try:
        grp.getgrnam(g["name"])
    except KeyError:
        run("groupadd", *(["-g", str(g["gid"])] if g["gid"] is not None else []), g["name"])

for u in spec["users"]:
    try:
        pwd.getpwnam(u["name"])
        created = False
    except KeyError:
        argv = ["useradd", "-d", u["home"]]
        if u["uid"] is not None:
            argv += ["-u", str(u["uid"])]
        if u["group"]:
            argv += ["-g", u["group"]]
        if u["createHome"]:
            argv += ["-m"]
        argv += ["-s", u["shell"] or ("/bin/bash" if u["isNormalUser"] else "/usr/sbin/nologin")]
        if u["description"]:
            argv += ["-c", u["description"]]
        run(*argv, u["name"])
        created = True
    if u["extraGroups"]:
        subprocess.run(["usermod", "-a", "-G", ",".join(u["extraGroups"]), u["name"]], check=False)
    password = u["hashedPassword"]
    if password is None and created:
        password = u["initialHashedPassword"]
    if password is not None and (created or not spec["mutableUsers"]):
        run("usermod", "-p", password, u["name"])
