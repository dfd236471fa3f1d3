#!/usr/bin/env bash
# Installs what xlb needs on Debian 12, skipping what is present.
#   deps.sh build   what `make` needs: clang, llvm, kernel UAPI headers
#   deps.sh test    what the tests need on top: iproute2, ethtool, curl, nginx,
#                   wrk, tmux, redis, memcached, ab, python3 (the protocol
#                   tests' servers and clients), bird2 (the scale-out tests'
#                   BGP daemon)
#   deps.sh bench   what the benchmarks need on top: haproxy, gnuplot
set -euo pipefail

# command or file -> Debian package
build=(
	"clang:clang"
	"llvm-readelf:llvm"
	"llvm-strip:llvm"
	"/usr/include/linux/bpf.h:linux-libc-dev"
	"gcc:gcc"
	"file:file"
)
test=(
	"ip:iproute2"
	"ethtool:ethtool"
	"curl:curl"
	"nginx:nginx-light"
	"wrk:wrk"
	"tmux:tmux"
	"ss:iproute2"
	"redis-server:redis-server"
	"redis-cli:redis-tools"
	"redis-benchmark:redis-tools"
	"memcached:memcached"
	"ab:apache2-utils"
	"python3:python3-minimal"
	"bird:bird2"
	"birdc:bird2"
)
bench=(
	"haproxy:haproxy"
	"gnuplot:gnuplot-nox"
)

want=()
case "${1:-build}" in
build) want=("${build[@]}") ;;
test) want=("${build[@]}" "${test[@]}") ;;
bench) want=("${build[@]}" "${test[@]}" "${bench[@]}") ;;
*) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac

missing=()
for w in "${want[@]}"; do
	what=${w%%:*} pkg=${w#*:}
	if [[ $what == /* ]]; then
		[[ -e $what ]] && continue
	else
		command -v "$what" >/dev/null 2>&1 && continue
		# sbin tools are found there even when PATH lacks them
		[[ -x /usr/sbin/$what || -x /sbin/$what ]] && continue
	fi
	[[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
	echo "xlb: missing packages: ${missing[*]}" >&2
	echo "xlb: run as root to install them, or: sudo apt-get install -y ${missing[*]}" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null; then
	echo "xlb: missing packages: ${missing[*]} (and no apt-get here: install them by hand)" >&2
	exit 1
fi
echo "xlb: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# nginx, redis and bird must not start as system services: the tests run their own.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.xlb
chmod +x /usr/sbin/policy-rc.d.xlb
had_policy=0
[[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
[[ $had_policy -eq 0 ]] && cp /usr/sbin/policy-rc.d.xlb /usr/sbin/policy-rc.d
trap '[[ $had_policy -eq 0 ]] && rm -f /usr/sbin/policy-rc.d; rm -f /usr/sbin/policy-rc.d.xlb' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
