{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.services.timesyncd;
in
{
  options.services.timesyncd = {
    enable = mkOption {
      type = types.bool;
      default = !config.boot.isContainer;
      description = "Whether to synchronise the clock with systemd-timesyncd.";
    };
    servers = mkOption { type = types.listOf types.str; default = [ "0.nixos.pool.ntp.org" "1.nixos.pool.ntp.org" ]; description = "NTP servers."; };
    extraConfig = mkOption { type = types.lines; default = ""; description = "More timesyncd.conf text."; };
  };
  config = lib.mkIf cfg.enable {
    # As NixOS's timesyncd.nix (ids.nix: uid and gid 154).
    users.users.systemd-timesync = { uid = 154; group = "systemd-timesync"; };
    users.groups.systemd-timesync.gid = 154;
    environment.etc."systemd/timesyncd.conf".text = ''
      [Time]
      NTP=${lib.concatStringsSep " " cfg.servers}
      ${cfg.extraConfig}
    '';
  };
}
