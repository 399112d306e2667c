#!/usr/bin/env bash
# Rows per second of `pgveil migrate encrypt` and `reencrypt` on a table of
# ROWS rows with one text column (a phone number), against a throwaway
# PostgreSQL on loopback (fsync off, as in benches/pgbench.sh).
#
# Usage: benches/migrate.sh        (defaults: ROWS=50000 BATCH=1000 MODE=randomized METHOD=online)
#        METHOD=in-place benches/migrate.sh   (the table-rewrite path, `--in-place`)
# Online, the command waits between renaming the column and adding the new
# one for running pgveils to confirm a catalog reload (none run here).
# Needs: PostgreSQL server binaries (apt-get install postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-50000}
BATCH=${BATCH:-1000}
MODE=${MODE:-randomized}
METHOD=${METHOD:-online}
method_flag=()
[ "$METHOD" = in-place ] && method_flag=(--in-place)
PGVEIL=${PGVEIL:-target/release/pgveil}

bindir=""
for d in $(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /nonexistent)")") /usr/lib/postgresql/*/bin; do
  if [ -x "$d/initdb" ]; then bindir=$d; fi
done
[ -n "$bindir" ] || { echo "PostgreSQL server binaries not found: apt-get install postgresql" >&2; exit 1; }
if [ "$PGVEIL" = target/release/pgveil ]; then
  echo "building release binary ..."
  cargo build --release --quiet --bin pgveil
fi

work=$(mktemp -d /tmp/pgveil-migbench-XXXXXX)
run_as=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$work" 2>/dev/null || chown nobody: "$work"
  run_user=$(stat -c %U "$work")
  run_as=(setpriv --reuid="$run_user" --regid="$(id -g "$run_user")" --init-groups --)
fi
cleanup() {
  [ -f "$work/data/postmaster.pid" ] && "${run_as[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${run_as[@]}" "$bindir/initdb" -D "$work/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
cat >> "$work/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
"${run_as[@]}" "$bindir/pg_ctl" -D "$work/data" -o "-p $PG_PORT" -l "$work/pg.log" -w start >/dev/null
psql_direct() { "$bindir/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"; }
psql_direct -c "CREATE TABLE guests (id int PRIMARY KEY, phone text, note text);
  INSERT INTO guests SELECT i, '+86 138 ' || lpad(i::text, 8, '0'), 'n' FROM generate_series(1, $ROWS) i;"

psql_direct -c "VACUUM ANALYZE guests"

mkdir -p "$work/keyring"
cp keyring/keyring.toml "$work/keyring/"
cp keyring/demo-master.key "$work/master.key"; chmod 600 "$work/master.key"
cat > "$work/pgveil.toml" <<EOF
[proxy]
upstream = "127.0.0.1:$PG_PORT"
[keyring]
dir = "$work/keyring"
master_key_file = "$work/master.key"
[[columns]]
table = "guests"
column = "phone"
type = "text"
encrypt = "$MODE"
level = 3
EOF

timed() {
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$work/out.txt" 2>"$work/err.txt"
  t1=$(date +%s.%N)
  python3 -c "import sys; s=$t1-$t0; print(f'$label: {$ROWS} rows in {s:.2f} s = {$ROWS/s:,.0f} rows/s (wall clock, whole command)')"
  grep -E 'rows/s' "$work/out.txt" | sed 's/^/  pgveil says: /'
}
echo "pgveil migrate, $ROWS rows, one $MODE text column, batches of $BATCH, encrypt $METHOD"
timed "encrypt  " "$PGVEIL" migrate encrypt --config "$work/pgveil.toml" --all --batch-size "$BATCH" "${method_flag[@]}"
"$PGVEIL" keyring rotate --config "$work/pgveil.toml" >/dev/null
timed "reencrypt" "$PGVEIL" migrate reencrypt --config "$work/pgveil.toml" --batch-size "$BATCH"
grep -E 'key version' "$work/out.txt" | sed 's/^/  /'
