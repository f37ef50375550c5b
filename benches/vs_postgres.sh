#!/usr/bin/env bash
# One durable command in reeve against one durable row in PostgreSQL, side by side in one run.
#
#   bash benches/vs_postgres.sh            # 1, 16 and 64 clients, 10 s each, best of 2 rounds
#   SECS=5 ROUNDS=1 CLIENTS="1 16" bash benches/vs_postgres.sh
#
# PostgreSQL: `pgbench -M prepared`, a single-row INSERT + COMMIT per transaction, default
# settings (fsync on, synchronous_commit on). reeve: `wrk` POSTing
# /api/v1/watches/{id}/trigger to a release build with --sync durable (each request is one
# commit, answered after its fdatasync). Both on loopback, on the same disk, alternating per
# client count so that both see the same machine. Also prints the disk's own one-write +
# fdatasync rate (pg_test_fsync). Needs: PostgreSQL 15 binaries, pgbench, wrk (Debian:
# postgresql-15, postgresql-contrib, wrk), a release build (`cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-"1 16 64"}
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
REEVE=${REEVE:-target/release/reeve}
WORK=$(pwd)/target/bench-vs-postgres
PGPORT=${PGPORT:-55432}
REEVE_ADDR=127.0.0.1:${REEVE_PORT:-58080}

for tool in "$PGBIN/postgres" "$PGBIN/pgbench" "$PGBIN/pg_test_fsync" wrk curl "$REEVE"; do
    command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 1; }
done

rm -rf "$WORK"
mkdir -p "$WORK"
# PostgreSQL refuses to run as root.
PGUSER_OS=postgres
id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --no-create-home "$PGUSER_OS"
chown "$PGUSER_OS" "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u "$PGUSER_OS" -- "$@"; else "$@"; fi; }

cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    [ -n "${REEVE_PID:-}" ] && kill "$REEVE_PID" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(uname -r), $(df -T "$WORK" | awk 'NR==2 {print $2}') on $(df "$WORK" | awk 'NR==2 {print $1}')"

# The disk's own limit: one 8 kB write + fdatasync into a preallocated file.
as_pg "$PGBIN/pg_test_fsync" -s 3 -f "$WORK/fsync.test" > "$WORK/fsync.txt" 2>&1 || true
disk=$(awk '/Compare file sync methods using one 8kB write/ {s=1} s && $1 == "fdatasync" {print int($2); exit}' "$WORK/fsync.txt")
echo "disk: one 8 kB write + fdatasync: ${disk:-?} ops/s (pg_test_fsync)"

as_pg "$PGBIN/initdb" -D "$WORK/pg" -U bench --auth=trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w \
    -o "-p $PGPORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
psql() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U bench -q "$@"; }
psql -d postgres -c "CREATE TABLE t (id bigserial PRIMARY KEY, v int NOT NULL)"
cat > "$WORK/insert.sql" <<'SQL'
\set r random(1, 1000000)
INSERT INTO t (v) VALUES (:r);
SQL

"$REEVE" serve --data-dir "$WORK/reeve" --listen "$REEVE_ADDR" --runners 0 --sync durable \
    --trigger-per-min 4000000000 > "$WORK/reeve.out" 2> "$WORK/reeve.err" &
REEVE_PID=$!
for _ in $(seq 100); do [ -s "$WORK/reeve/admin.token" ] && curl -sf "http://$REEVE_ADDR/healthz" >/dev/null && break; sleep 0.1; done
TOKEN=$(cat "$WORK/reeve/admin.token")
api() { curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' "$@"; }
api "http://$REEVE_ADDR/api/v1/projects" -d '{"id": "bench"}' >/dev/null
WATCH=$(api "http://$REEVE_ADDR/api/v1/watches" -d '{"project": "bench", "source": "https://src.example.com/b", "to_uri": "https://dst.example.com/b", "watch_interval": 525600}' \
    | sed -E 's/.*"id":"([^"]+)".*/\1/')
cat > "$WORK/trigger.lua" <<LUA
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["Content-Type"] = "application/json"
LUA

pg_run() { # clients -> tx/s
    local c=$1 j=$(( $1 < 2 ? 1 : 2 ))
    "$PGBIN/pgbench" -h 127.0.0.1 -p "$PGPORT" -U bench -n -M prepared -c "$c" -j "$j" -T "$SECS" \
        -f "$WORK/insert.sql" postgres 2>/dev/null | awk '/^tps/ {print int($3); exit}'
}
reeve_run() { # clients -> requests/s (non-2xx counted as failures)
    local c=$1 t=$(( $1 < 2 ? 1 : 2 ))
    local out; out=$(wrk -t"$t" -c"$c" -d"${SECS}s" -s "$WORK/trigger.lua" \
        "http://$REEVE_ADDR/api/v1/watches/$WATCH/trigger")
    if echo "$out" | grep -q "Non-2xx"; then echo "reeve answered errors: $out" >&2; exit 1; fi
    echo "$out" | awk '/^Requests\/sec/ {print int($2); exit}'
}

printf "\n%-8s %-14s %-16s %-10s\n" clients "PostgreSQL tx/s" "reeve commands/s" "reeve / PG"
for c in $CLIENTS; do
    best_pg=0; best_rv=0
    for _ in $(seq "$ROUNDS"); do
        p=$(pg_run "$c"); r=$(reeve_run "$c")
        [ "$p" -gt "$best_pg" ] && best_pg=$p
        [ "$r" -gt "$best_rv" ] && best_rv=$r
    done
    printf "%-8s %-15s %-16s %-10s\n" "$c" "$best_pg" "$best_rv" "$(awk -v a="$best_rv" -v b="$best_pg" 'BEGIN {printf "%.2f", a / b}')"
    if [ "$c" = 1 ] && [ -n "${disk:-}" ]; then
        echo "         reeve at 1 client = $(awk -v a="$best_rv" -v b="$disk" 'BEGIN {printf "%.0f%%", 100 * a / b}') of the disk's fdatasync rate"
    fi
done
