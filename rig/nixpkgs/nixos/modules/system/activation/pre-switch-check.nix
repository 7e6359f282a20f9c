# system.preSwitchChecks: shell snippets switch-to-configuration runs before
# it switches (any action, `check` included) unless NIXOS_NO_CHECK=1 — as
# nixpkgs' nixos/modules/system/activation/pre-switch-check.nix.  The script
# gets the new system and the action as $1 and $2; a failing snippet prints
# "Pre-switch check 'NAME' failed" and the script exits 1, after which
# switch-to-configuration prints "Pre-switch checks failed" and exits 1.
{ config, lib, pkgs, ... }:
let
  preSwitchCheckScript = lib.concatLines (
    lib.mapAttrsToList (name: text: ''
      # pre-switch check ${name}
      if ! (
        ${text}
      ) >&2 ; then
        echo "Pre-switch check '${name}' failed" >&2
        exit 1
      fi
    '') config.system.preSwitchChecks
  );
in
{
  options.system.preSwitchChecksScript = lib.mkOption {
    type = lib.types.pathInStore;
    internal = true;
    readOnly = true;
    default = lib.getExe (pkgs.writeShellApplication {
      name = "pre-switch-checks";
      text = preSwitchCheckScript;
    });
    description = "The program switch-to-configuration runs for the pre-switch checks.";
  };

  options.system.preSwitchChecks = lib.mkOption {
    type = lib.types.attrsOf lib.types.str;
    default = { };
    example = lib.literalExpression ''
      { failsEveryTime =
        '''
          false
        ''';
      }
    '';
    description = ''
      Checks run by switch-to-configuration before it changes anything, as
      shell snippets by name; one that fails stops the switch. Each gets the
      new system's path as `$1` and the action (switch, test …) as `$2`.
      NIXOS_NO_CHECK=1 in switch-to-configuration's environment skips them.
    '';
  };
}
