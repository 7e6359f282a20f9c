#!/usr/bin/env bash
# Can KVM really run a Linux kernel on this machine? Prints "kvm" and exits 0 if it can,
# prints "tcg" and exits 1 if not (reasons on stderr). Never hangs: answers within ~8 s.
#
#   rig/nixpkgs/nixos/lib/kvm-probe.sh [--fresh] [KERNEL]   (the VM runner calls it)
#     KERNEL   a kernel QEMU can boot with -kernel (default: the cached guest image's vmlinuz)
#     --fresh  ignore the answer cached for this boot of the host in /run/rehearse-rig-kvm
#
# /dev/kvm can exist while KVM is unusable: with broken nested virtualisation QEMU either dies
# at once ("failed to set MSR 0x10a", the -cpu max/host case) or the guest hangs at kernel entry
# (other CPU models). So the probe boots the kernel with no initrd and no root device, the way
# the runner would run it (-machine accel=kvm -cpu max), and counts KVM as working only if the
# kernel reaches its "VFS: Unable to mount root" panic and QEMU exits (panic=-1, -no-reboot).
#
# Environment: REHEARSE_RIG_CACHE (default /var/cache/rehearse-rig),
# REHEARSE_RIG_KVM_CPU (the -cpu model to probe, default max: what the runner uses).
set -u

cache=${REHEARSE_RIG_CACHE:-/var/cache/rehearse-rig}
answer_file=/run/rehearse-rig-kvm
cpu=${REHEARSE_RIG_KVM_CPU:-max}
limit=8        # seconds: the longest a working KVM may take to reach the panic
silent_limit=4 # seconds: a kernel that has printed nothing by then is not running

fresh=0
kernel=
for a in "$@"; do
	case $a in
	--fresh) fresh=1 ;;
	-h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) echo "kvm-probe: unknown option $a" >&2; exit 2 ;;
	*) kernel=$a ;;
	esac
done
kernel=${kernel:-$cache/guest/vmlinuz}

answer() { # answer kvm|tcg REASON
	echo "kvm-probe: $2" >&2
	# Cache only the probe of the default kernel and CPU model: a property of the host, valid
	# until the host reboots (/run is a tmpfs).
	if [ "$default_kernel" = 1 ] && [ "$cpu" = max ]; then
		printf '%s\n' "$1" >"$answer_file.$$" 2>/dev/null && mv -f "$answer_file.$$" "$answer_file" 2>/dev/null
	fi
	echo "$1"
	[ "$1" = kvm ]
	exit
}

default_kernel=0
[ $# -eq 0 ] || [ "$*" = --fresh ] && default_kernel=1

if [ "$fresh" = 0 ] && [ "$default_kernel" = 1 ] && [ "$cpu" = max ] && [ -r "$answer_file" ]; then
	cached=$(cat "$answer_file")
	# (The mini nixpkgs' runner caches "kvm:tcg" or "tcg" in the same file.)
	case $cached in
	kvm | kvm:tcg | tcg)
		echo "kvm-probe: cached in $answer_file (--fresh to probe again)" >&2
		echo "${cached%%:*}"
		[ "${cached%%:*}" = kvm ]
		exit
		;;
	esac
fi

[ -e /dev/kvm ] || answer tcg "no /dev/kvm"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || answer tcg "/dev/kvm is not readable and writable by $(id -un)"
command -v qemu-system-x86_64 >/dev/null || answer tcg "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
[ -r "$kernel" ] || answer tcg "no kernel to probe with at $kernel (build the image: rig/image/build)"

scratch=$(mktemp -d /tmp/rehearse-kvm-probe.XXXXXX) || answer tcg "cannot make a temporary directory"
qemu_pid=
cleanup() {
	if [ -n "$qemu_pid" ]; then
		local t
		t=$(cat "$scratch/timeout.pid" 2>/dev/null)
		[ -n "$t" ] && kill -KILL -- "-$t" "$t" 2>/dev/null
		wait "$qemu_pid" 2>/dev/null
	fi
	rm -rf "$scratch"
}
trap cleanup EXIT

# timeout -s KILL bounds QEMU even if this script is killed before its own deadline.
# In a subshell whose stderr is silenced, so that bash does not report QEMU's abort. timeout(1)
# puts itself and QEMU into a process group of their own, which cleanup kills whole.
(
	timeout -s KILL "$limit" qemu-system-x86_64 -machine accel=kvm -cpu "$cpu" -m 256 -smp 1 \
		-nodefaults -no-user-config -display none -no-reboot \
		-kernel "$kernel" -append "console=ttyS0 panic=-1" \
		-serial file:"$scratch/console" >"$scratch/qemu.log" 2>&1 </dev/null &
	echo $! >"$scratch/timeout.pid"
	wait $!
) 2>/dev/null &
qemu_pid=$!

start=$(date +%s%N)
while :; do
	if ! kill -0 "$qemu_pid" 2>/dev/null; then
		wait "$qemu_pid" 2>/dev/null
		rc=$?
		qemu_pid=
		if grep -q 'VFS: Unable to mount root' "$scratch/console" 2>/dev/null; then
			answer kvm "the kernel ran under KVM (-cpu $cpu) to its root-mount panic in $(( ($(date +%s%N) - start) / 1000000 )) ms"
		fi
		if [ "$rc" = 137 ]; then
			answer tcg "QEMU with KVM did not finish within ${limit} s (killed)"
		fi
		answer tcg "QEMU with KVM (-cpu $cpu) exited ($rc) without booting the kernel: $(head -c 300 "$scratch/qemu.log" | tr '\n' ' ')"
	fi
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	if [ "$ms" -ge $((silent_limit * 1000)) ] && ! [ -s "$scratch/console" ]; then
		answer tcg "the kernel printed nothing in ${silent_limit} s under KVM (-cpu $cpu): the guest hangs"
	fi
	sleep 0.05
done
