#!/usr/bin/env bash
# xlb developer demo. Builds xlb (installing what a fresh Debian 12 machine
# lacks), makes a private network namespace, attaches xlb's XDP program to that
# namespace's lo, drives TCP traffic through it, shows the data plane's counters,
# detaches and removes everything it made. The host's own interfaces are never
# touched.
#
#   sudo bash local_script.sh [-r|--reuse]
set -euo pipefail
cd "$(dirname "$0")"

reuse=0
for a in "$@"; do
	case $a in
	-r | --reuse) reuse=1 ;;
	-h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "local_script.sh: unknown argument $a (use -r/--reuse or --help)" >&2; exit 2 ;;
	esac
done
if [[ $(id -u) -ne 0 ]]; then
	echo "local_script.sh: needs root (XDP and network namespaces): sudo bash $0 $*" >&2
	exit 1
fi

make --no-print-directory
bash scripts/deps.sh test >/dev/null

ns=xlb-demo-$$
server=""
cleanup() {
	[[ -n $server ]] && kill "$server" 2>/dev/null || true
	ip netns exec "$ns" ./xlb detach lo >/dev/null 2>&1 || true
	ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

echo "== attach to lo in namespace $ns"
in_ns ./xlb attach lo
if [[ $reuse -eq 1 ]]; then
	echo "== -r: attaching again must be refused (a program is there), and --force replaces it"
	if in_ns ./xlb attach lo 2>&1; then echo "unexpected: second attach succeeded" >&2; exit 1; fi
	in_ns ./xlb attach --force lo
fi

echo "== traffic: 20 HTTP requests to a server inside the namespace"
mkdir -p build/demo
head -c 100000 /dev/urandom >build/demo/blob
in_ns python3 -m http.server 4171 --bind 127.0.0.1 --directory build/demo >/dev/null 2>&1 &
server=$!
for _ in $(seq 50); do in_ns curl -sf -o /dev/null http://127.0.0.1:4171/ && break; sleep 0.1; done
want=$(sha256sum <build/demo/blob | cut -d' ' -f1)
ok=0
for _ in $(seq 20); do
	got=$(in_ns curl -sf http://127.0.0.1:4171/blob | sha256sum | cut -d' ' -f1)
	[[ $got == "$want" ]] && ok=$((ok + 1))
done
echo "$ok of 20 responses intact"

echo "== status"
in_ns ./xlb status lo
echo "== detach"
in_ns ./xlb detach lo
in_ns ./xlb status lo
[[ $ok -eq 20 ]]
