# showOption quotes the path components that are not valid Nix identifiers
# (and leaves the placeholders `*` and `<name>` alone); option paths in
# messages and `toString options.x` use it.
{ lib }:
let
  inherit (lib) mkOption types;
  ev = lib.evalModules {
    modules = [ { options.home.file = mkOption { type = types.attrsOf (types.submodule { options.source = mkOption { type = types.str; }; }); default = { }; };
                  options."my-opt"."2nd" = mkOption { type = types.int; default = 0; }; } ];
  };
in
{
  bashrc = lib.showOption [ "home" "file" ".bashrc" "source" ];
  vhost = lib.showOption [ "services" "nginx" "virtualHosts" "example.com" "root" ];
  plain = lib.showOption [ "users" "users" "alice-2" "it's" "_x" ];
  placeholders = lib.showOption [ "users" "users" "<name>" "extraGroups" "*" ];
  odd = lib.showOption [ "a" "1b" "" "with space" "dollar$" ];
  optionToString = "${ev.options."my-opt"."2nd"}";
}
