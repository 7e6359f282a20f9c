{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.i18n;
in
{
  options.i18n = {
    defaultLocale = mkOption {
      type = types.str;
      default = "en_US.UTF-8";
      description = "The default locale (LANG).";
    };
    extraLocaleSettings = mkOption {
      type = types.attrsOf types.str;
      default = { };
      description = "More locale variables (LC_TIME …).";
    };
    supportedLocales = mkOption {
      type = types.listOf types.str;
      default = [ "${cfg.defaultLocale}/UTF-8" ];
      description = "Locales to build (not built by the mini nixpkgs).";
    };
  };
  config.environment.etc."locale.conf".text =
    lib.concatStringsSep "\n"
      ([ "LANG=${cfg.defaultLocale}" ] ++ lib.mapAttrsToList (n: v: "${n}=${v}") cfg.extraLocaleSettings)
    + "\n";
}
