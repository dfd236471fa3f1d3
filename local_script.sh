#!/usr/bin/env bash
# xlb demo. Builds xlb (installing what a fresh Debian 12 machine lacks), then,
# inside a private network namespace so that the host's own interfaces are
# never touched: starts three demo workers, starts xlb on lo port 8080 in
# front of them, drives keep-alive HTTP traffic through it (every response
# checked byte for byte), prints how many requests each worker served and the
# data plane's counters, stops everything and removes what it made.
#
#   sudo bash local_script.sh [-r|--reuse]
#
# -r restarts the control plane with --reuse in the middle of the traffic: a
# new xlb takes the connections over from the running one, and no client
# notices.
set -euo pipefail
cd "$(dirname "$0")"

reuse=0
for a in "$@"; do
	case $a in
	-r | --reuse) reuse=1 ;;
	-h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "local_script.sh: unknown argument $a (use -r/--reuse or --help)" >&2; exit 2 ;;
	esac
done
if [[ $(id -u) -ne 0 ]]; then
	echo "local_script.sh: needs root (XDP, network namespaces): sudo bash $0 $*" >&2
	exit 1
fi
export PATH=$PATH:/usr/local/go/bin

make --no-print-directory

ns=xlb-demo-$$
dir=$(mktemp -d /tmp/xlb-demo.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
# Runs a command in the namespace (nsenter, not a function, so that "$!" of a
# background command is the command itself and our signals reach it).
in_ns=(nsenter --net="/run/netns/$ns" --)

# wait_for FILE TEXT: wait (at most 10 s) until FILE contains TEXT.
wait_for() {
	for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
	echo "local_script.sh: timed out waiting for '$2' in $1:" >&2
	cat "$1" >&2
	return 1
}

echo "== three demo workers on 127.0.0.1:4171-4173 (namespace $ns)"
for i in 1 2 3; do
	"${in_ns[@]}" ./xlb demo-worker --name "worker$i" "127.0.0.1:417$i" >"$dir/worker$i.log" 2>&1 &
	pids+=($!)
	wait_for "$dir/worker$i.log" "listening"
done

echo "== xlb lo 8080 127.0.0.1:4171 127.0.0.1:4172 127.0.0.1:4173"
"${in_ns[@]}" ./xlb lo 8080 127.0.0.1:4171 127.0.0.1:4172 127.0.0.1:4173 >"$dir/xlb.log" 2>&1 &
xlb=$!
pids+=("$xlb")
wait_for "$dir/xlb.log" "data plane attached"
for i in 1 2 3; do wait_for "$dir/xlb.log" "worker=127.0.0.1:417$i"; done

echo "== traffic: 12 keep-alive connections x 150 requests, bodies of 100 B to 1 MB"
"${in_ns[@]}" ./xlb demo-client --conns 12 --requests 150 --pause 5ms 127.0.0.1:8080 >"$dir/client.log" 2>&1 &
client=$!
if [[ $reuse -eq 1 ]]; then
	sleep 1
	echo "== -r: a new xlb takes over with --reuse while the clients are talking"
	"${in_ns[@]}" ./xlb --reuse lo 8080 127.0.0.1:4171 127.0.0.1:4172 127.0.0.1:4173 >"$dir/xlb2.log" 2>&1 &
	xlb2=$!
	pids+=("$xlb2")
	wait_for "$dir/xlb2.log" "took over"
	wait "$xlb" && echo "   the old xlb handed over and exited (status 0)"
	grep -h "took over" "$dir/xlb2.log" | sed 's/^/   /'
fi
status=0
wait "$client" || status=$?
cat "$dir/client.log"

# The sockets xlb holds carried no payload: the data plane moved every
# byte. By default it holds none but its listener (the data plane answers
# the clients' handshakes and dials the workers); with --dial socket or
# --handshake kernel it holds its pool connections or client legs, and ss
# prints bytes_received only when it is not zero (a handshake acks 1).
# Its listener, found by pid, shows that ss sees xlb at all.
lb_pid=${xlb2:-$xlb}
listening=$("${in_ns[@]}" ss -tlnp | grep -c "pid=$lb_pid," || true)
read -r held recv < <("${in_ns[@]}" ss -tinp state established | awk -v pid="pid=$lb_pid," '
	/users:/ { mine = index($0, pid) > 0; if (mine) n++; next }
	mine { for (i = 1; i <= NF; i++) if ($i ~ /^bytes_received:/) { split($i, f, ":"); r += f[2] } mine = 0 }
	END { print n + 0, r + 0 }')
echo "== xlb's own sockets: ${listening:-0} listening, $held connections held, ${recv:-0} payload bytes received by them"

echo "== xlb status lo"
"${in_ns[@]}" ./xlb status lo | grep -vE ' 0$'
if [[ $status -ne 0 ]]; then
	echo "VERDICT: errors (see above)"
	exit 1
fi
if [[ ${listening:-0} -eq 0 ]]; then
	echo "VERDICT: could not find xlb's listener with ss: nothing shown about user space"
	exit 1
fi
if [[ ${recv:-0} -gt 0 ]]; then
	echo "VERDICT: responses intact, but xlb's sockets received payload"
	exit 1
fi
if [[ ${held:-0} -eq 0 ]]; then
	echo "VERDICT: every response intact; xlb held no connection at all (the data plane answered the clients and dialed the workers): no payload went through user space"
else
	echo "VERDICT: every response intact; no payload went through user space"
fi
