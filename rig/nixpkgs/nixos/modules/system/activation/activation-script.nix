# system.activationScripts → the toplevel's `activate` script, snippets in
# the order their `deps` ask for (then by name), as in NixOS.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  snippet = types.either types.str (types.submodule {
    options = {
      text = mkOption { type = types.lines; description = "The snippet."; };
      deps = mkOption { type = types.listOf types.str; default = [ ]; description = "Snippets that run first."; };
      supportsDryActivation = mkOption { type = types.bool; default = false; description = "Run by dry-activate too."; };
    };
  });

  normalise = s: if builtins.isString s then { text = s; deps = [ ]; } else s;
  scripts = lib.mapAttrs (_: normalise) config.system.activationScripts;

  # Depth-first: each snippet after its deps, each once.
  ordered =
    let
      visit = acc: name:
        if lib.elem name acc.seen || !(scripts ? ${name}) then acc
        else
          let after = lib.foldl' visit (acc // { seen = acc.seen ++ [ name ]; }) scripts.${name}.deps;
          in after // { order = after.order ++ [ name ]; };
    in
    (lib.foldl' visit { seen = [ ]; order = [ ]; } (lib.attrNames scripts)).order;

  body = lib.concatMapStrings (name: ''
    #### Activation script snippet ${name}:
    _localstatus=0
    ( set -e
    ${scripts.${name}.text}
    ) || _localstatus=$?
    if [ "$_localstatus" -ne 0 ]; then
      echo "Activation script snippet '${name}' failed ($_localstatus)" >&2
      _status=$_localstatus
    fi

  '') ordered;
in
{
  options.system.activationScripts = mkOption {
    type = types.attrsOf snippet;
    default = { };
    description = "Shell snippets run at activation, as root.";
  };

  config.system.build.activate = pkgs.writeScript "activate" ''
    #!${pkgs.runtimeShell}
    systemConfig=@out@
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    _status=0

    ${body}
    # Make this configuration the current one.
    mkdir -p /run/nixos
    ln -sfn "$systemConfig" /run/current-system.tmp
    mv -T /run/current-system.tmp /run/current-system

    exit $_status
  '';
}
