# Activation step of users.users / users.groups in the rig's Debian guest:
# create missing groups and users, add group members, and set declared
# passwords (always when users.mutableUsers is false, only at creation
# otherwise, as NixOS does): hashedPassword over password over
# hashedPasswordFile, as NixOS orders them.  The guest's python3 is minimal
# (no json, no crypt): clear-text passwords go through chpasswd.
import ast
import grp
import pwd
import subprocess
import sys

spec = ast.literal_eval(open(sys.argv[1]).read())


def shadow_hash(name: str) -> str | None:
    with open("/etc/shadow") as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == name:
                return fields[1]
    return None


def run(*argv: str) -> None:
    subprocess.run(argv, check=True)


for g in spec["groups"]:
    try:
        grp.getgrnam(g["name"])
    except KeyError:
        # A gid NixOS fixes may be taken on the Debian guest: then any gid.
        if g["gid"] < 0 or subprocess.run(["groupadd", "-g", str(g["gid"]), g["name"]], check=False).returncode:
            run("groupadd", g["name"])

for u in spec["users"]:
    try:
        pwd.getpwnam(u["name"])
        created = False
    except KeyError:
        argv = ["useradd", "-d", u["home"]]
        if u["uid"] >= 0:
            argv += ["-u", str(u["uid"])]
        if u["group"]:
            argv += ["-g", u["group"]]
        if u["createHome"]:
            argv += ["-m"]
        if u["isSystemUser"]:
            argv += ["-r"]
        argv += ["-s", u["shell"] or ("/bin/bash" if u["isNormalUser"] else "/usr/sbin/nologin")]
        if u["description"]:
            argv += ["-c", u["description"]]
        run(*argv, u["name"])
        created = True
    if u["extraGroups"]:
        subprocess.run(["usermod", "-a", "-G", ",".join(u["extraGroups"]), u["name"]], check=False)
    if not (created or not spec["mutableUsers"]):
        continue
    password = u["hashedPassword"]
    if not password and u["password"]:
        subprocess.run(["chpasswd"], input=f"{u['name']}:{u['password']}\n", text=True, check=True)
        continue
    if not password and u["hashedPasswordFile"]:
        try:
            with open(u["hashedPasswordFile"]) as f:
                password = f.readline().strip()
        except OSError:
            print(f"warning: password file ‘{u['hashedPasswordFile']}’ does not exist", file=sys.stderr)
    if not password and created:
        password = u["initialHashedPassword"]
        if not password and u["initialPassword"]:
            subprocess.run(["chpasswd"], input=f"{u['name']}:{u['initialPassword']}\n", text=True, check=True)
            continue
    if password and shadow_hash(u["name"]) != password:
        run("usermod", "-p", password, u["name"])

for g in spec["groups"]:
    for member in g["members"]:
        subprocess.run(["usermod", "-a", "-G", g["name"], member], check=False)
