# Two leaves built side by side (-j2); libfoo prints more than 25 lines and
# exits 1, so the top is never built and the log tail has lines to drop.
let
  salt = builtins.getEnv "SALT";
  mk = name: script: deps: derivation {
    inherit name deps;
    system = builtins.currentSystem;
    PATH = "/usr/bin:/bin";
    builder = "/bin/sh";
    args = [ "-c" ''
      echo "${name}: starting ${salt}"
      ${script}
      echo ${name} > $out
    '' ];
  };
  zlib = mk "zlib-1.2.13" "sleep 0.2; echo 'zlib-1.2.13: done'" [ ];
  libfoo = mk "libfoo-0.1" ''
    for i in $(seq 1 30); do echo "libfoo-0.1: compiling unit $i"; done
    sleep 0.2
    echo "foo.c:12: error: expected ';' before '}' token" >&2
    exit 1
  '' [ ];
in
mk "openssh-9.2p1" "true" [ zlib libfoo ]
