# Two paths of a few MiB (the second refers to the first), fetched from a
# local binary cache: Substitute and CopyPath activities with byte Progress.
let
  salt = builtins.getEnv "SALT";
  mk = name: size: deps: derivation {
    inherit name deps salt;
    system = builtins.currentSystem;
    PATH = "/usr/bin:/bin";
    builder = "/bin/sh";
    args = [ "-c" "mkdir $out; head -c ${toString size} /dev/urandom > $out/blob; echo $deps > $out/deps" ];
  };
  data = mk "firmware-data-1.0" 6000000 [ ];
in
mk "linux-firmware-20230210" 3000000 [ data ]
