"""check-sshd-config without an sshd on the build host.

Real NixOS checks its generated sshd_config with `sshd -G -T -C lport=…`.
The rig's sshd is the guest's (Debian 12, OpenSSH 9.2p1); when the build host
has none, this script checks the file the way that sshd's parser
(servconf.c) does: the keyword table, the values of yes/no and multi-state
keywords, log levels, ports, and algorithm names (as `ssh -Q` of the host's
OpenSSH 9.2 client lists them), and it fails with sshd's messages.

Usage: check-sshd-config.py FILE CONNECTION-SPEC
"""

from __future__ import annotations

import subprocess
import sys

FLAG = ("yes", "no")
MULTI = {
    "permitrootlogin": ("without-password", "prohibit-password", "forced-commands-only", "yes", "no"),
    "addressfamily": ("inet", "inet6", "any"),
    "compression": ("yes", "delayed", "no"),
    "gatewayports": ("clientspecified", "yes", "no"),
    "allowtcpforwarding": ("yes", "all", "no", "local", "remote"),
    "allowstreamlocalforwarding": ("yes", "all", "no", "local", "remote"),
    "permittunnel": ("yes", "point-to-point", "ethernet", "no"),
    "ignorerhosts": ("yes", "shosts-only", "no"),
    "fingerprinthash": ("md5", "sha256"),
}
FLAGS = """
hostbasedauthentication hostbasedusesnamefrompacketonly pubkeyauthentication
kerberosauthentication kerberosorlocalpasswd kerberosticketcleanup gssapiauthentication
gssapicleanupcredentials gssapistrictacceptorcheck gssapikeyexchange gssapistorecredentialsonrekey
passwordauthentication kbdinteractiveauthentication challengeresponseauthentication
skeyauthentication dsaauthentication printmotd printlastlog ignoreuserknownhosts x11forwarding
x11uselocalhost strictmodes permitemptypasswords tcpkeepalive keepalive allowagentforwarding usedns
permittty permituserrc disableforwarding exposeauthinfo streamlocalbindunlink usepam debianbanner
""".split()
LOGLEVELS = ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE", "DEBUG", "DEBUG1", "DEBUG2", "DEBUG3")
FACILITIES = ("DAEMON", "USER", "AUTH", "AUTHPRIV", *(f"LOCAL{i}" for i in range(8)))
ALGORITHMS = {
    "ciphers": ("cipher", "cipher spec"),
    "macs": ("mac", "mac spec"),
    "kexalgorithms": ("kex", "KexAlgorithms"),
}
# Keywords taking other values, checked no further here.
OTHER = """
port hostkey pidfile modulifile logingracetime syslogfacility loglevel logverbose
hostbasedacceptedalgorithms hostbasedacceptedkeytypes hostkeyalgorithms pubkeyacceptedalgorithms
pubkeyacceptedkeytypes pubkeyauthoptions gssapikexalgorithms listenaddress x11displayoffset xauthlocation
permituserenvironment rekeylimit allowusers denyusers allowgroups denygroups ciphers macs kexalgorithms
subsystem maxstartups persourcemaxstartups persourcenetblocksize maxauthtries maxsessions banner
clientaliveinterval clientalivecountmax authorizedkeysfile acceptenv setenv match permitopen
permitlisten forcecommand chrootdirectory hostcertificate revokedkeys securitykeyprovider
trustedusercakeys authorizedprincipalsfile casignaturealgorithms ipqos authenticationmethods
streamlocalbindmask rdomain include requiredrsasize channeltimeout unusedconnectiontimeout
authorizedkeyscommand authorizedkeyscommanduser authorizedprincipalscommand
authorizedprincipalscommanduser hostkeyagent versionaddendum protocol
""".split()
DEPRECATED = """
serverkeybits keyregenerationinterval rhostsauthentication rhostsrsaauthentication rsaauthentication
checkmail uselogin verifyreversemapping reversemappingcheck authorizedkeysfile2
useprivilegeseparation useroaming
""".split()
UNSUPPORTED = ["kerberosgetafstoken"]


def algorithms(kind: str) -> set[str]:
    out = subprocess.run(["ssh", "-Q", kind], check=True, text=True, stdout=subprocess.PIPE).stdout
    return set(out.split())


def main() -> int:
    path = sys.argv[1]
    bad = 0
    with open(path) as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].replace("=", " ", 1).split()
        if not words:
            continue
        keyword, args = words[0], words[1:]
        key = keyword.lower()
        if key in DEPRECATED:
            print(f"{path} line {n}: Deprecated option {keyword}", file=sys.stderr)
            continue
        if key in UNSUPPORTED:
            print(f"{path} line {n}: Unsupported option {keyword}", file=sys.stderr)
            continue
        if key not in FLAGS and key not in MULTI and key not in OTHER:
            print(f"{path}: line {n}: Bad configuration option: {keyword}", file=sys.stderr)
            bad += 1
            continue
        if key in FLAGS or key in MULTI:
            if not args:
                print(f"{path} line {n}: missing argument.", file=sys.stderr)
                return 255
            if args[0].lower() not in MULTI.get(key, FLAG):
                print(f'{path} line {n}: unsupported option "{args[0]}".', file=sys.stderr)
                return 255
        elif key == "loglevel" and (not args or args[0].upper() not in LOGLEVELS):
            print(f"{path} line {n}: unsupported log level '{args[0] if args else '<NONE>'}'", file=sys.stderr)
            return 255
        elif key == "syslogfacility" and (not args or args[0].upper() not in FACILITIES):
            print(f"{path} line {n}: unsupported log facility '{args[0] if args else '<NONE>'}'", file=sys.stderr)
            return 255
        elif key == "port" and (not args or not args[0].isdigit() or not 0 < int(args[0]) < 65536):
            print(f"{path} line {n}: Badly formatted port number.", file=sys.stderr)
            return 255
        elif key in ALGORITHMS:
            kind, what = ALGORITHMS[key]
            spec = args[0] if args else ""
            names = spec[1:] if spec[:1] in ("+", "-", "^") else spec
            if not names or not set(names.split(",")) <= algorithms(kind):
                print(f"{path} line {n}: Bad SSH2 {what} '{spec or '<NONE>'}'.", file=sys.stderr)
                return 255
    if bad:
        print(f"{path}: terminating, {bad} bad configuration options", file=sys.stderr)
        return 255
    return 0


sys.exit(main())
