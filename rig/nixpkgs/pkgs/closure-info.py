# Builder of closureInfo: writes `registration` in the format that
# `nix-store --load-db` reads, and `store-paths`, from the closure that Nix
# exports through exportReferencesGraph (structured attributes).
import json
import os

attrs = json.load(open(".attrs.json"))
out = attrs["outputs"]["out"]
closure = sorted(attrs["closure"], key=lambda p: p["path"])
os.mkdir(out)
with open(os.path.join(out, "registration"), "w") as reg:
    for p in closure:
        reg.write(f"{p['path']}\n{p['narHash']}\n{p['narSize']}\n\n")
        reg.write(f"{len(p['references'])}\n")
        for r in sorted(p["references"]):
            reg.write(f"{r}\n")
with open(os.path.join(out, "store-paths"), "w") as sp:
    for p in closure:
        sp.write(p["path"] + "\n")
with open(os.path.join(out, "total-nar-size"), "w") as t:
    t.write(str(sum(p["narSize"] for p in closure)))
