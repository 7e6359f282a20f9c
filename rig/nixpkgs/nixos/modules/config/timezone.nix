{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  tz = config.time.timeZone;
in
{
  options.time = {
    timeZone = mkOption {
      type = types.nullOr (types.strMatching "[^ ]+");
      default = null;
      description = "The time zone, e.g. Europe/Paris; null leaves it to the machine.";
    };
    hardwareClockInLocalTime = mkOption { type = types.bool; default = false; description = "Keep the RTC in local time."; };
  };
  config.environment.etc = lib.mkIf (tz != null) {
    timezone.text = "${tz}\n";
    localtime.source = "/usr/share/zoneinfo/${tz}";
  };
}
