#!/usr/bin/env bash
# Durable commands on one node against a three-node cluster, side by side in one run, and how
# long a failover takes.
#
#   bash benches/cluster.sh                  # 1, 16 and 64 clients, 10 s each; 10 leader kills
#   SECS=5 CLIENTS="1 16" KILLS=3 bash benches/cluster.sh
#
# Commands: `wrk` POSTing /api/v1/watches/{id}/trigger (one commit each, answered once durable)
# to a release build: a single node with --sync durable (its write-ahead log, one fdatasync
# per group), and the leader of a three-node cluster on a three-server NATS JetStream cluster
# (each group acknowledged by a majority of the stream's three replicas, which fsync on their
# own schedule: JetStream's default). Both on loopback, on the same disk and the same two
# cores, alternating per client count. Failover: `kill -9` of the leader, then the time until
# another node says it leads (polling GET /api/v1/cluster every 20 ms); the killed node is
# started again before the next kill. Needs: nats-server, wrk, curl, a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
CLIENTS=${CLIENTS:-"1 16 64"}
KILLS=${KILLS:-10}
REEVE=${REEVE:-target/release/reeve}
WORK=$(pwd)/target/bench-cluster
ADMIN=bench-cluster-admin-secret-0123456789abcdef
NATS=$(command -v nats-server || echo /usr/sbin/nats-server)

for tool in "$NATS" wrk curl "$REEVE"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

rm -rf "$WORK"
mkdir -p "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}" ${NODE_PIDS[@]:-}; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}')"

# Three NATS servers in one JetStream cluster.
ROUTES="nats-route://127.0.0.1:56221,nats-route://127.0.0.1:56222,nats-route://127.0.0.1:56223"
for i in 1 2 3; do
    cat > "$WORK/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:5621$i
jetstream { store_dir: "$WORK/n$i" }
cluster { name: bench, listen: 127.0.0.1:5622$i, routes: [$ROUTES] }
CONF
    "$NATS" -c "$WORK/n$i.conf" > "$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
done
URLS=nats://127.0.0.1:56211,nats://127.0.0.1:56212,nats://127.0.0.1:56213

declare -A NODE_PID
NODE_PIDS=()
start_node() { # i
    local i=$1
    REEVE_ADMIN_TOKEN=$ADMIN "$REEVE" serve --data-dir "$WORK/r$i" --listen "127.0.0.1:5810$i" \
        --runners 0 --trigger-per-min 4000000000 --cluster "$URLS" --node-name "r$i" \
        > "$WORK/r$i.out" 2>> "$WORK/r$i.err" &
    NODE_PID[$i]=$!
    NODE_PIDS+=($!)
}
for i in 1 2 3; do start_node "$i"; done
REEVE_ADMIN_TOKEN=$ADMIN "$REEVE" serve --data-dir "$WORK/single" --listen 127.0.0.1:58100 \
    --runners 0 --sync durable --trigger-per-min 4000000000 > "$WORK/single.out" 2> "$WORK/single.err" &
PIDS+=($!)

api() { curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$@"; }
leader() { # any node's answer: the leader's name, or nothing
    for i in 1 2 3; do
        local l
        l=$(curl -s -m 1 -H "Authorization: Bearer $ADMIN" "http://127.0.0.1:5810$i/api/v1/cluster" 2>/dev/null \
            | sed -nE 's/.*"leader":\{[^}]*"name":"([^"]+)".*/\1/p') || true
        [ -n "$l" ] && { echo "$l"; return; }
    done
}
for _ in $(seq 300); do [ -n "$(leader)" ] && curl -sf http://127.0.0.1:58100/healthz >/dev/null && break; sleep 0.1; done
LEAD=$(leader)
[ -n "$LEAD" ] || { echo "no leader" >&2; tail -20 "$WORK"/r*.err >&2; exit 1; }
for _ in $(seq 100); do api "http://127.0.0.1:58100/api/v1/projects" >/dev/null 2>&1 && break; sleep 0.1; done

setup() { # addr -> watch id
    api "http://$1/api/v1/projects" -d '{"id": "bench"}' >/dev/null 2>&1 || true
    api "http://$1/api/v1/watches" -d '{"project": "bench", "source": "https://src.example.com/b", "to_uri": "https://dst.example.com/b", "watch_interval": 525600}' \
        | sed -E 's/.*"id":"([^"]+)".*/\1/'
}
LADDR=127.0.0.1:5810${LEAD#r}
SINGLE_WATCH=$(setup 127.0.0.1:58100)
CLUSTER_WATCH=$(setup "$LADDR")
cat > "$WORK/trigger.lua" <<LUA
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Authorization"] = "Bearer $ADMIN"
wrk.headers["Content-Type"] = "application/json"
LUA
run() { # addr watch clients -> requests/s
    local t=$(( $3 < 2 ? 1 : 2 ))
    wrk -t "$t" -c "$3" -d "${SECS}s" -s "$WORK/trigger.lua" "http://$1/api/v1/watches/$2/trigger" \
        | awk '/Requests\/sec/ {print int($2)}'
}
echo
echo "| clients | single node (durable) cmds/s | 3-node cluster cmds/s | cluster / single |"
echo "|---|---|---|---|"
for c in $CLIENTS; do
    s=$(run 127.0.0.1:58100 "$SINGLE_WATCH" "$c")
    k=$(run "$LADDR" "$CLUSTER_WATCH" "$c")
    echo "| $c | $s | $k | $(awk -v a="$k" -v b="$s" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}') |"
done

echo
echo "failover: kill -9 of the leader, until another node leads ($KILLS times)"
times=()
for k in $(seq "$KILLS"); do
    LEAD=$(leader)
    n=${LEAD#r}
    kill -9 "${NODE_PID[$n]}"
    wait "${NODE_PID[$n]}" 2>/dev/null || true
    start=$(date +%s%N)
    while :; do
        now=$(leader)
        [ -n "$now" ] && [ "$now" != "$LEAD" ] && break
        sleep 0.02
    done
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    times+=("$ms")
    echo "  kill $k: $LEAD -> $now in $ms ms"
    start_node "$n"
    sleep 2
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
p50=$(echo "$sorted" | awk -v n="${#times[@]}" 'NR == int((n + 1) / 2) {print}')
max=$(echo "$sorted" | tail -1)
echo "failover over $KILLS kills: p50 ${p50} ms, max ${max} ms"
