#!/bin/sh
# Re-records what Nix (2.8 on Debian 12 when these were made) prints on
# stderr with `--log-format internal-json -v`; tests/unit/test_progress.py
# reads the recordings. Builds real (tiny) derivations in the local store.
# Usage: tests/unit/data/record.sh   (from anywhere)
set -eu
data=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$data/../../.." && pwd)
export NIX_CONF_DIR="$repo/rig/nix" NIX_USER_CONF_FILES=
export SALT="recorded-$(date +%s)"
json="--log-format internal-json -v"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nix-build "$data/drvs-ok.nix" -j2 --no-out-link $json 2>"$data/nix-build-ok.jsonl" >/dev/null
nix-build "$data/drvs-fail.nix" -j2 --no-out-link $json 2>"$data/nix-build-fail.jsonl" >/dev/null || true

# A warning (an unknown setting) and a builtins.trace, both level-0/1 msgs.
nix-build --no-out-link $json --option no-such-setting 1 -E "builtins.trace \"a trace message\" (derivation {
  name = \"traced-1.0\"; system = builtins.currentSystem; builder = \"/bin/sh\";
  args = [ \"-c\" \"echo hi; echo x > \$out\" ]; salt = \"$SALT\"; })" 2>"$data/nix-build-warn-trace.jsonl" >/dev/null

# Substitution: build, push to a file:// cache, delete, fetch back.
big=$(nix-build "$data/drvs-big.nix" --no-out-link 2>/dev/null)
paths=$(nix-store -qR "$big")
nix copy --extra-experimental-features nix-command --to "file://$tmp/cache?compression=none" $paths
# What `nix copy` itself reports in 2.8: CopyPath activities, no byte Progress.
nix copy --extra-experimental-features nix-command --to "file://$tmp/cache2?compression=none" $json $paths \
  2>"$data/nix-copy.jsonl"
nix-store --delete $big >/dev/null 2>&1
nix-store --delete $paths >/dev/null 2>&1
nix-build "$data/drvs-big.nix" --no-out-link --option substituters "file://$tmp/cache" --option require-sigs false \
  $json 2>"$data/nix-build-substitute.jsonl" >/dev/null

# The VM of the repository's example with the mini nixpkgs, with an /etc
# file added so that its derivations are new and really built.
cp -r "$repo/examples/fripon" "$repo/examples/fripon-vm" "$tmp/"
sed -i "s|^}\$|  environment.etc.\"rehearse-recording\".text = \"$SALT\";\n}|" "$tmp/fripon-vm/configuration.nix"
nix-build "$repo/src/rehearse/host/nix/eval.nix" -A vm --argstr configuration "$tmp/fripon-vm/configuration.nix" \
  -I nixpkgs="$repo/rig/nixpkgs" --no-out-link $json 2>"$data/nix-build-vm.jsonl" >/dev/null

# Evaluation errors: the seed's fripon as it is (an option conflict with the
# VM module), in JSON and as plain text, and <nixpkgs> missing.
conflict="$repo/src/rehearse/host/nix/eval.nix -A vm --argstr configuration $repo/examples/fripon/configuration.nix -I nixpkgs=$repo/rig/nixpkgs --no-out-link"
nix-build $conflict $json 2>"$data/nix-eval-conflict.jsonl" >/dev/null || true
nix-build $conflict 2>"$data/nix-eval-conflict.txt" >/dev/null || true
NIX_PATH= nix-build "$repo/src/rehearse/host/nix/eval.nix" -A vm --argstr configuration "$repo/examples/fripon-vm/configuration.nix" \
  --no-out-link $json 2>"$data/nix-eval-no-nixpkgs.jsonl" >/dev/null || true

wc -c "$data"/*.jsonl "$data"/*.txt
