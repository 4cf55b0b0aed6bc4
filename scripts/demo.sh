#!/usr/bin/env bash
# make demo: three dispatcher replicas forming a three-member embedded etcd
# cluster, and five tcp-servers registered with different weights. Ctrl-C
# stops everything. State lives in demo-data/ (wiped at every start).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
DATA=${DATA:-demo-data}
rm -rf "$DATA"; mkdir -p "$DATA"

pids=()
dpids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping ${#pids[@]} processes..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "stopped; logs are in $DATA/"
}
trap cleanup INT TERM EXIT

cluster=""
for i in 1 2 3; do cluster+="${cluster:+,}d$i=http://127.0.0.1:238$i"; done
for i in 1 2 3; do
  "$BIN/dispatcher" --name "d$i" --listen-http "127.0.0.1:808$i" --data-dir "$DATA/d$i.etcd" \
    --listen-client-urls "http://127.0.0.1:237$i" --advertise-client-urls "http://127.0.0.1:237$i" \
    --listen-peer-urls "http://127.0.0.1:238$i" --initial-advertise-peer-urls "http://127.0.0.1:238$i" \
    --initial-cluster "$cluster" --initial-cluster-token demo >"$DATA/d$i.log" 2>&1 &
  pids+=($!); dpids+=($!)
done
weights=(100 100 200 300 50)
declare -A tcppid
for i in 1 2 3 4 5; do
  "$BIN/tcpserver" --listen "127.0.0.1:900$i" --id "tcp$i" --status-listen "127.0.0.1:910$i" \
    --drain-window 5s >"$DATA/tcp$i.log" 2>&1 &
  pids+=($!); tcppid[tcp$i]=$!
done

ETCDCTL=(go tool etcdctl --endpoints http://127.0.0.1:2371,http://127.0.0.1:2372,http://127.0.0.1:2373)
for _ in $(seq 1 100); do
  "${ETCDCTL[@]}" put /tcpdispatch/demo/ready 1 >/dev/null 2>&1 && break
  sleep 0.2
done
"${ETCDCTL[@]}" del /tcpdispatch/demo/ready >/dev/null
for i in 1 2 3 4 5; do
  "${ETCDCTL[@]}" put "/tcpdispatch/servers/tcp$i/addr" "127.0.0.1:900$i" >/dev/null
  "${ETCDCTL[@]}" put "/tcpdispatch/servers/tcp$i/weight" "${weights[$((i-1))]}" >/dev/null
done
for _ in $(seq 1 50); do
  [ "$(curl -s http://127.0.0.1:8081/v1/status | grep -o '"eligible":[0-9]*')" = '"eligible":5' ] && break
  sleep 0.2
done

# A client on the SDK: it asks the replicas (IP direct, no DNS), keeps a
# session with a ping every second and reconnects whenever it breaks.
"$BIN/tcpclient" --bootstrap 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 \
  --cache "$DATA/tcpclient-cache.json" --backoff-base 1s >"$DATA/tcpclient.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do grep -q 'ping 2' "$DATA/tcpclient.log" && break; sleep 0.1; done
using=$(grep -o 'msg=connected .*' "$DATA/tcpclient.log" | grep -o 'server=tcp[0-9]*' | tail -1 | cut -d= -f2)

cat <<MSG

tcpdispatch demo is running: 3 replicas (embedded 3-member etcd), 5 tcp-servers
(weights tcp1..tcp5 = ${weights[*]}). Logs: $DATA/*.log

  status page: http://127.0.0.1:8081/ui   (every replica has one: :8082/ui, :8083/ui)
  get-tcp-ip:  http://127.0.0.1:8081/get-tcp-ip  http://127.0.0.1:8082/get-tcp-ip  http://127.0.0.1:8083/get-tcp-ip
  status:      http://127.0.0.1:9101/status ... http://127.0.0.1:9105/status (tcp1..tcp5)

bin/tcpclient is connected to ${using:-?} and pings it every second:
$(grep -E 'connected|ping' "$DATA/tcpclient.log" | tail -n 3 | sed 's/^/  /')

Watch it, then kill its server and see it reconnect elsewhere within the backoff:
  tail -f $DATA/tcpclient.log
  kill -KILL ${tcppid[${using:-tcp1}]:-}        # SIGKILL ${using:-tcp1}
  kill -TERM ${tcppid[${using:-tcp1}]:-}        # or drain it: status 503, connections closed over 5s

Status page (live, any replica): http://127.0.0.1:8081/ui

Try:
  curl -s http://127.0.0.1:8081/get-tcp-ip
  curl -s 'http://127.0.0.1:8082/get-tcp-ip?format=text'
  curl -s 'http://127.0.0.1:8083/get-tcp-ip?key=user-42'
  curl -s http://127.0.0.1:8081/v1/servers
  curl -s http://127.0.0.1:8081/v1/status
  for i in \$(seq 60); do curl -s 'http://127.0.0.1:8081/get-tcp-ip?format=text'; echo; done | sort | uniq -c
  addr=\$(curl -s 'http://127.0.0.1:8081/get-tcp-ip?format=text'); exec 3<>/dev/tcp/\${addr%:*}/\${addr#*:}; echo hello >&3; head -n1 <&3; exec 3>&-

  ${ETCDCTL[*]} put /tcpdispatch/servers/tcp1/weight 1000
  ${ETCDCTL[*]} put /tcpdispatch/servers/tcp5/weight 0          # drain
  ${ETCDCTL[*]} put /tcpdispatch/config/strategy hash
  ${ETCDCTL[*]} del --prefix /tcpdispatch/servers/tcp2/        # deregister (mind the trailing slash)
  ${ETCDCTL[*]} get --prefix /tcpdispatch/health/

Press Ctrl-C to stop everything.
MSG
# Run until Ctrl-C, or until a replica dies; killing tcp-servers (as
# suggested above) is part of the demo and does not end it.
wait -n "${dpids[@]}" || true
echo "a replica exited; see $DATA/*.log"
