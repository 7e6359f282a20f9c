# rig: like NixOS, every shell finds the system profile's programs first.
case ":$PATH:" in
*:/run/current-system/sw/bin:*) ;;
*) PATH="/run/current-system/sw/bin:$PATH"; export PATH ;;
esac
