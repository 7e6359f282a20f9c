# Four derivations, two of them leaves built side by side (-j2), the others
# waiting for them: Builds' Progress moves as each finishes. The builder
# announces its phases the way nixpkgs' stdenv does (an `@nix setPhase` line
# on its output), which Nix turns into SetPhase results.
let
  salt = builtins.getEnv "SALT"; # a new value each recording: new derivations, real builds
  mk = name: deps: derivation {
    inherit name deps;
    system = builtins.currentSystem;
    PATH = "/usr/bin:/bin";
    builder = "/bin/sh";
    args = [ "-c" ''
      echo '@nix {"action":"setPhase","phase":"unpackPhase"}'
      echo "${name}: unpacking ${salt}"
      sleep 0.2
      echo '@nix {"action":"setPhase","phase":"buildPhase"}'
      echo "${name}: building"
      echo "${name}: a line on stderr" >&2
      sleep 0.2
      echo '@nix {"action":"setPhase","phase":"installPhase"}'
      echo "${name}: installing"
      echo ${name} > $out
    '' ];
  };
  hello = mk "hello-2.12" [ ];
  zlib = mk "zlib-1.2.13" [ ];
  openssl = mk "openssl-3.0.8" [ zlib ];
in
mk "openssh-9.2p1" [ hello openssl ]
