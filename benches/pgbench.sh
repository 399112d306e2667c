#!/usr/bin/env bash
# Side-by-side pgbench: direct PostgreSQL, PgBouncer (session mode), a plain
# TCP byte forwarder, and pgveil, all on loopback, in one alternating run.
#
# Prints TPS and average latency per target and workload, the ratios
# pgveil/direct, pgveil/PgBouncer and pgveil/forwarder, and each proxy's CPU
# time per transaction (utime+stime of the proxy process / transactions).
#
# Usage: benches/pgbench.sh            (defaults: 8 clients, 10 s runs, 2 rounds;
#   even rounds run each workload's targets in reverse order)
#   CLIENTS=8 DURATION=10 ROUNDS=2 SCALE=10 WORKLOADS="select-simple ..." benches/pgbench.sh
#   WORKLOADS="guests-read guests-guard" benches/pgbench.sh   (read mixes: roles; bulk-read guard)
#   WORKLOADS="guests-write guests-read" GUEST_TARGETS="pgveil-enc pgveil-enc-audit" \
#     READ_TARGETS="pgveil-manager pgveil-manager-audit" benches/pgbench.sh   (audit trail on/off)
#   PGVEIL_BIN=... FORWARDER_BIN=... benches/pgbench.sh   (prebuilt binaries, no cargo)
#   AUDIT_DIR=/dev/shm/x benches/pgbench.sh   (where the audited targets write their trail)
#   AUDIT_CONTROL=1 ...   (A/A: the "-audit" targets run without the trail)
#   KEEP_WORK=1 benches/pgbench.sh   (keep the server and proxy logs in the work directory)
# Needs: PostgreSQL server binaries, pgbench, pgbouncer (apt-get install
# postgresql pgbouncer). Run as root or as a normal user.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-8}
THREADS=${THREADS:-2}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
SCALE=${SCALE:-10}
WORKLOADS=${WORKLOADS:-"select-simple select-extended select-prepared tpcb-prepared guests-write guests-read guests-guard"}
TARGETS=${TARGETS:-"direct pgbouncer forwarder pgveil"}
# The guests workload (benches/guests.sql) compares PgBouncer and pgveil on
# a plain table with pgveil encrypting three columns of the same table.
# pgveil-enc-audit is pgveil-enc with the audit trail on ([audit] path set:
# one record per statement).
GUEST_TARGETS=${GUEST_TARGETS:-"pgbouncer pgveil pgveil-enc pgveil-enc-audit"}
# The read-heavy mix (benches/guests-read.sql) looks a guest up by phone and
# returns five protected columns: through pgveil on the plain table, and
# through pgveil on the encrypted table as a manager (clear) and as front
# desk (masked).
# pgveil-manager-audit: the manager through the audited pgveil.
READ_TARGETS=${READ_TARGETS:-"pgveil pgveil-manager pgveil-frontdesk pgveil-manager-audit"}
READ_ROWS=${READ_ROWS:-10000}
# The guard mix (benches/guests-guard.sql) compares the same policy role with
# and without bulk-read limits (max_rows, window_rows) on the encrypted table.
GUARD_TARGETS=${GUARD_TARGETS:-"pgveil-read pgveil-capped"}
PGVEIL_WORKERS=${PGVEIL_WORKERS:-0}

bindir=""
for d in $(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /nonexistent)")") /usr/lib/postgresql/*/bin; do
  if [ -x "$d/initdb" ] && [ -x "$d/pgbench" ]; then bindir=$d; fi
done
[ -n "$bindir" ] || { echo "PostgreSQL server binaries not found: apt-get install postgresql" >&2; exit 1; }
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
[ -x "$PGBOUNCER" ] || { echo "pgbouncer not found: apt-get install pgbouncer" >&2; exit 1; }

# PGVEIL_BIN and FORWARDER_BIN skip the build (e.g. when builds must be
# serialized with other work on the machine).
if [ -n "${PGVEIL_BIN:-}" ] && [ -n "${FORWARDER_BIN:-}" ]; then
  pgveil=$PGVEIL_BIN; forwarder=$FORWARDER_BIN
else
  echo "building release binaries ..."
  cargo build --release --quiet --bin pgveil
  forwarder=$(cargo bench --bench forwarder --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*forwarder[^"]*"' | tail -n 1 | cut -d'"' -f4)
  pgveil=${CARGO_TARGET_DIR:-target}/release/pgveil
fi
[ -x "$forwarder" ] || { echo "could not build benches/forwarder.rs" >&2; exit 1; }
[ -x "$pgveil" ] || { echo "pgveil binary not found at $pgveil" >&2; exit 1; }

work=$(mktemp -d /tmp/pgveil-bench-XXXXXX)
run_as=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$work" 2>/dev/null || chown nobody: "$work"
  # setpriv execs (no fork), so $! is the server's own pid for CPU accounting.
  run_user=$(stat -c %U "$work")
  run_as=(setpriv --reuid="$run_user" --regid="$(id -g "$run_user")" --init-groups --)
fi
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/data/postmaster.pid" ] && "${run_as[@]}" "$bindir/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  if [ -n "${KEEP_WORK:-}" ]; then echo "kept logs in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port); BOUNCER_PORT=$(free_port); FWD_PORT=$(free_port); VEIL_PORT=$(free_port)

echo "starting PostgreSQL on $PG_PORT ..."
"${run_as[@]}" "$bindir/initdb" -D "$work/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null
cat >> "$work/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = 100
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
"${run_as[@]}" "$bindir/pg_ctl" -D "$work/data" -o "-p $PG_PORT" -l "$work/pg.log" -w start >/dev/null
"$bindir/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -q -s "$SCALE" postgres >/dev/null 2>&1

psql_direct() { "$bindir/psql" -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql_direct -d postgres -c "CREATE DATABASE plain" -c "CREATE DATABASE enc"
psql_direct -d plain -c "CREATE TABLE bench_guests (id serial PRIMARY KEY, name text, phone text, id_number text, email text, address text, note text); CREATE INDEX ON bench_guests (phone);"
psql_direct -d enc -c "CREATE TABLE bench_guests (id serial PRIMARY KEY, name bytea, phone bytea, id_number bytea, email text, address bytea, note text); CREATE INDEX ON bench_guests (phone);"
psql_direct -d postgres -c "CREATE ROLE bench_manager LOGIN; CREATE ROLE bench_frontdesk LOGIN;"
for db in plain enc; do
  psql_direct -d "$db" -c "GRANT ALL ON ALL TABLES IN SCHEMA public TO PUBLIC; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO PUBLIC;"
done
# READ_ROWS guests with phones 13800000001.. for the read mix. The numbers
# are built as strings: mawk prints 13800000001 as 1.38e+10.
awk -v n="$READ_ROWS" 'BEGIN {
  for (i = 1; i <= n; i++) {
    if (i % 500 == 1) printf "INSERT INTO bench_guests (name, phone, id_number, email, address, note) VALUES\n"
    printf "(%s, %s, %s, %s, %s, %s)%s\n", "'"'"'Guest Number " i "'"'"'", "'"'"'138" sprintf("%08d", i) "'"'"'",
      "'"'"'1101051990" sprintf("%08d", i) "'"'"'", "'"'"'guest" i "@example.com'"'"'",
      "'"'"'No. " i " Long Street, Springfield'"'"'", "'"'"'bench'"'"'", (i % 500 == 0 || i == n) ? ";" : ","
  }
}' > "$work/guests-rows.sql"

cat > "$work/pgbouncer.ini" <<EOF
[databases]
postgres = host=127.0.0.1 port=$PG_PORT dbname=postgres
plain = host=127.0.0.1 port=$PG_PORT dbname=plain
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
EOF
echo '"postgres" ""' > "$work/userlist.txt"
[ "$(id -u)" = 0 ] && chown "$(stat -c %U "$work")" "$work/pgbouncer.ini" "$work/userlist.txt"
"${run_as[@]}" "$PGBOUNCER" "$work/pgbouncer.ini" >/dev/null 2>&1 &
pids+=($!); BOUNCER_PID=$!
"$forwarder" "127.0.0.1:$FWD_PORT" "127.0.0.1:$PG_PORT" "$PGVEIL_WORKERS" &
pids+=($!); FWD_PID=$!
cat > "$work/pgveil.toml" <<EOF
[proxy]
listen = "127.0.0.1:$VEIL_PORT"
upstream = "127.0.0.1:$PG_PORT"
workers = $PGVEIL_WORKERS
[admin]
listen = ""
EOF
RUST_LOG=warn "$pgveil" serve --config "$work/pgveil.toml" 2>"$work/pgveil.log" &
pids+=($!); VEIL_PID=$!

# pgveil with a policy: three encrypted columns of enc.bench_guests, demo keyring.
ENC_PORT=$(free_port)
install -m 600 keyring/demo-master.key "$work/master.key"
cat > "$work/pgveil-enc.toml" <<EOF
[proxy]
listen = "127.0.0.1:$ENC_PORT"
upstream = "127.0.0.1:$PG_PORT"
workers = $PGVEIL_WORKERS
[admin]
listen = ""
[keyring]
dir = "$PWD/keyring"
master_key_file = "$work/master.key"
[catalog]
database = "enc"
[[columns]]
table = "bench_guests"
column = "name"
type = "text"
encrypt = "randomized"
level = 3
mask = "name"
[[columns]]
table = "bench_guests"
column = "phone"
type = "text"
encrypt = "searchable"
level = 3
mask = "phone"
[[columns]]
table = "bench_guests"
column = "id_number"
type = "text"
encrypt = "searchable"
level = 4
mask = "cn_id"
[[columns]]
table = "bench_guests"
column = "email"
type = "text"
encrypt = "none"
level = 3
mask = "email"
[[columns]]
table = "bench_guests"
column = "address"
type = "text"
encrypt = "randomized"
level = 3
mask = "address"
[[roles]]
name = "manager"
members = ["bench_manager"]
clearance = 4
[[roles]]
name = "frontdesk"
members = ["bench_frontdesk"]
clearance = 2
EOF
RUST_LOG=warn "$pgveil" serve --config "$work/pgveil-enc.toml" 2>"$work/pgveil-enc.log" &
pids+=($!); ENC_PID=$!
# The same with the audit trail on.
AUDIT_PORT=$(free_port)
sed "0,/^listen = .*/s//listen = \"127.0.0.1:$AUDIT_PORT\"/" "$work/pgveil-enc.toml" > "$work/pgveil-enc-audit.toml"
# AUDIT_CONTROL=1 leaves the trail off here too: an A/A run of two
# identical proxies, to see how far apart two processes measure on this
# machine when nothing differs.
if [ "${AUDIT_CONTROL:-0}" != 1 ]; then
  printf '[audit]\npath = "%s"\n' "${AUDIT_DIR:-$work/audit}/audit.jsonl" >> "$work/pgveil-enc-audit.toml"
fi
RUST_LOG=warn "$pgveil" serve --config "$work/pgveil-enc-audit.toml" 2>"$work/pgveil-enc-audit.log" &
pids+=($!); AUDIT_PID=$!

# The same policy with one role for the bench user, without and with
# bulk-read limits (the window is large enough never to refuse).
READ_PORT=$(free_port); CAPPED_PORT=$(free_port)
read_role='[[roles]]
name = "reader"
members = ["postgres"]
clearance = 2'
sed -e "0,/^listen = .*/s//listen = \"127.0.0.1:$READ_PORT\"/" "$work/pgveil-enc.toml" > "$work/pgveil-read.toml"
printf '%s\n' "$read_role" >> "$work/pgveil-read.toml"
sed -e "0,/^listen = .*/s//listen = \"127.0.0.1:$CAPPED_PORT\"/" "$work/pgveil-enc.toml" > "$work/pgveil-capped.toml"
printf '%s\nmax_rows = 1000\nmax_bytes = 10000000\nwindow_rows = 1000000000000\nwindow = "10m"\n' "$read_role" >> "$work/pgveil-capped.toml"
RUST_LOG=warn "$pgveil" serve --config "$work/pgveil-read.toml" 2>"$work/pgveil-read.log" &
pids+=($!); READ_PID=$!
RUST_LOG=warn "$pgveil" serve --config "$work/pgveil-capped.toml" 2>"$work/pgveil-capped.log" &
pids+=($!); CAPPED_PID=$!

for port in $BOUNCER_PORT $FWD_PORT $VEIL_PORT $ENC_PORT $READ_PORT $CAPPED_PORT $AUDIT_PORT; do
  for _ in $(seq 100); do
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" && break
    sleep 0.1
  done
done

# Load the read mix's guests: encrypted through pgveil, plain directly.
"$bindir/psql" -X -q -h 127.0.0.1 -p "$ENC_PORT" -U postgres -d enc -f "$work/guests-rows.sql" >/dev/null
psql_direct -d plain -f "$work/guests-rows.sql" >/dev/null
# The read mix must find its guest: a lookup that matches nothing measures
# an empty result, not the read path.
for check in "$ENC_PORT enc" "$PG_PORT plain"; do
  set -- $check
  found=$("$bindir/psql" -X -tA -h 127.0.0.1 -p "$1" -U postgres -d "$2" \
    -c "SELECT count(*) FROM bench_guests WHERE phone = '138$(printf %08d "$READ_ROWS")'")
  if [ "$found" != 1 ]; then
    echo "read mix setup: guest $READ_ROWS not found by phone in $2 (got '$found')" >&2
    exit 1
  fi
done

port_of() { case $1 in direct) echo "$PG_PORT";; pgbouncer) echo "$BOUNCER_PORT";; forwarder) echo "$FWD_PORT";; pgveil) echo "$VEIL_PORT";; pgveil-enc|pgveil-manager|pgveil-frontdesk) echo "$ENC_PORT";; pgveil-read) echo "$READ_PORT";; pgveil-capped) echo "$CAPPED_PORT";; pgveil-enc-audit|pgveil-manager-audit) echo "$AUDIT_PORT";; esac; }
pid_of() { case $1 in pgbouncer) echo "$BOUNCER_PID";; forwarder) echo "$FWD_PID";; pgveil) echo "$VEIL_PID";; pgveil-enc|pgveil-manager|pgveil-frontdesk) echo "$ENC_PID";; pgveil-read) echo "$READ_PID";; pgveil-capped) echo "$CAPPED_PID";; pgveil-enc-audit|pgveil-manager-audit) echo "$AUDIT_PID";; *) echo "";; esac; }
db_of() { case $2 in guests-guard) echo enc;; guests-*) case $1 in pgveil-enc*|pgveil-manager*|pgveil-frontdesk) echo enc;; *) echo plain;; esac;; *) echo postgres;; esac; }
user_of() { case $1 in pgveil-manager|pgveil-manager-audit) echo bench_manager;; pgveil-frontdesk) echo bench_frontdesk;; *) echo postgres;; esac; }
targets_of() { case $1 in guests-write) echo "$GUEST_TARGETS";; guests-read) echo "$READ_TARGETS";; guests-guard) echo "$GUARD_TARGETS";; *) echo "$TARGETS";; esac; }
cpu_ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
user_ticks() { [ -n "$1" ] && awk '{print $14}' "/proc/$1/stat" || echo 0; }
args_of() {
  case $1 in
    select-simple) echo "-S -M simple";;
    select-extended) echo "-S -M extended";;
    select-prepared) echo "-S -M prepared";;
    tpcb-prepared) echo "-M prepared";;
    guests-write) echo "-M prepared -f benches/guests.sql";;
    guests-read) echo "-M prepared -D rows=$READ_ROWS -f benches/guests-read.sql";;
    guests-guard) echo "-M prepared -f benches/guests-guard.sql";;
  esac
}


# Every proxy must be up: a target that failed to start (a port taken, a
# config error) would otherwise show up only as a pgbench failure later.
for name in pgbouncer forwarder pgveil pgveil-enc pgveil-enc-audit pgveil-read pgveil-capped; do
  pid=$(pid_of "$name")
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$name (pid $pid) is not running:" >&2
    cat "$work/$name.log" >&2 2>/dev/null || true
    exit 1
  fi
done

results="$work/results.tsv"
: > "$results"
TCK=$(getconf CLK_TCK)
echo "running: clients=$CLIENTS threads=$THREADS duration=${DURATION}s rounds=$ROUNDS scale=$SCALE"
for round in $(seq "$ROUNDS"); do
  for wl in $WORKLOADS; do
    # Odd rounds run the targets in the listed order, even rounds in the
    # reverse order, so neither side of a comparison always runs second
    # (after the other has grown the tables, or while autovacuum runs).
    order=$(targets_of "$wl")
    if [ $((round % 2)) -eq 0 ]; then order=$(printf '%s\n' $order | tac | tr '\n' ' '); fi
    for target in $order; do
      port=$(port_of "$target"); pid=$(pid_of "$target")
      before=$(cpu_ticks "$pid"); ubefore=$(user_ticks "$pid")
      # shellcheck disable=SC2046
      out=$("$bindir/pgbench" -h 127.0.0.1 -p "$port" -U "$(user_of "$target")" -n -c "$CLIENTS" -j "$THREADS" \
              -T "$DURATION" $(args_of "$wl") "$(db_of "$target" "$wl")" 2>&1) || { echo "$out" >&2; exit 1; }
      after=$(cpu_ticks "$pid"); uafter=$(user_ticks "$pid")
      tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
      lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
      txns=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
      cpu_us=$(awk -v t=$((after - before)) -v n="$txns" -v hz="$TCK" 'BEGIN { if (n > 0 && t > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$wl" "$target" "$tps" "$lat" "$cpu_us" >> "$results"
      # Rotated audit files are not needed by the bench: remove them so a
      # trail on tmpfs does not fill memory over a long run (pgveil keeps
      # writing the active file).
      rm -f "${AUDIT_DIR:-$work/audit}"/audit.jsonl.[0-9]*
      user_us=$(awk -v t=$((uafter - ubefore)) -v n="$txns" -v hz="$TCK" 'BEGIN { if (n > 0 && t > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
      printf '  round %s %-16s %-10s tps=%10s  lat=%7s ms  proxy_cpu=%6s us/txn (user %s)\n' "$round" "$wl" "$target" "$tps" "$lat" "$cpu_us" "$user_us"
    done
  done
done

echo
echo "Averages over $ROUNDS rounds ($CLIENTS clients, ${DURATION}s each):"
awk -F'\t' -v wl_list="$WORKLOADS" -v tg_list="$TARGETS pgveil-enc pgveil-enc-audit pgveil-manager pgveil-manager-audit pgveil-frontdesk pgveil-read pgveil-capped" '
  { key = $2 SUBSEP $3; tps[key] += $4; lat[key] += $5; if ($6 != "-") { cpu[key] += $6; ncpu[key]++ } n[key]++ }
  END {
    nw = split(wl_list, wls, " "); nt = split(tg_list, tg, " ")
    printf "%-16s %-10s %12s %10s %14s\n", "workload", "target", "tps", "lat_ms", "proxy_us/txn"
    for (i = 1; i <= nw; i++) for (j = 1; j <= nt; j++) {
      k = wls[i] SUBSEP tg[j]
      if (n[k]) printf "%-16s %-10s %12.0f %10.3f %14s\n", wls[i], tg[j], tps[k]/n[k], lat[k]/n[k], (ncpu[k] ? sprintf("%.1f", cpu[k]/ncpu[k]) : "-")
    }
    print ""
    printf "%-16s %14s %16s %16s %18s\n", "workload", "pgveil/direct", "pgveil/pgbouncer", "pgveil/forwarder", "pgveil-enc/pgveil"
    for (i = 1; i <= nw; i++) {
      w = wls[i]; v = tps[w SUBSEP "pgveil"]; d = tps[w SUBSEP "direct"]; b = tps[w SUBSEP "pgbouncer"]; f = tps[w SUBSEP "forwarder"]; e = tps[w SUBSEP "pgveil-enc"]
      if (!v) continue
      printf "%-16s %14s %16s %16s %18s\n", w, (d ? sprintf("%.3f", v/d) : "-"), (b ? sprintf("%.3f", v/b) : "-"), (f ? sprintf("%.3f", v/f) : "-"), (e && v ? sprintf("%.3f", e/v) : "-")
    }
    aw = tps["guests-write" SUBSEP "pgveil-enc-audit"]; ew = tps["guests-write" SUBSEP "pgveil-enc"]
    ar = tps["guests-read" SUBSEP "pgveil-manager-audit"]; er = tps["guests-read" SUBSEP "pgveil-manager"]
    if ((aw && ew) || (ar && er)) {
      print ""
      printf "audit on/off: guests-write %s, guests-read (manager) %s  (target >= 0.95)\n", (aw && ew ? sprintf("%.3f", aw/ew) : "-"), (ar && er ? sprintf("%.3f", ar/er) : "-")
    }
    m = tps["guests-read" SUBSEP "pgveil-manager"]; fd = tps["guests-read" SUBSEP "pgveil-frontdesk"]; p = tps["guests-read" SUBSEP "pgveil"]
    if (p && (m || fd)) {
      print ""
      printf "guests-read: manager (clear)/plain = %s, frontdesk (masked)/plain = %s  (target >= 0.80)\n", (m ? sprintf("%.3f", m/p) : "-"), (fd ? sprintf("%.3f", fd/p) : "-")
    }
    r = tps["guests-guard" SUBSEP "pgveil-read"]; c = tps["guests-guard" SUBSEP "pgveil-capped"]
    if (r && c) printf "\nguests-guard: capped / uncapped role = %.3f  (target >= 0.90)\n", c/r
  }' "$results"

# The audit ratio per round (each round runs both sides back to back), so
# the spread between rounds shows how precise the average is: mean, standard
# deviation and a 95% interval of the mean (Student's t), plus the proxy's
# CPU per transaction on both sides.
awk -F'\t' '
  $3 == "pgveil-enc" || $3 == "pgveil-manager" { off[$2, $1] = $4; offc[$2, $1] = $6 }
  $3 == "pgveil-enc-audit" || $3 == "pgveil-manager-audit" { on[$2, $1] = $4; onc[$2, $1] = $6; seen[$2] = 1; if ($1 > rounds) rounds = $1 }
  END {
    # two-sided 95% t quantiles for 1..30 degrees of freedom
    split("12.71 4.30 3.18 2.78 2.57 2.45 2.36 2.31 2.26 2.23 2.20 2.18 2.16 2.14 2.13 2.12 2.11 2.10 2.09 2.09 2.08 2.07 2.07 2.06 2.06 2.06 2.05 2.05 2.05 2.04", t, " ")
    for (w in seen) {
      n = 0; sum = 0; sq = 0; dc = 0; nc = 0
      for (r = 1; r <= rounds; r++) {
        if (!((w, r) in on) || !((w, r) in off) || off[w, r] <= 0) continue
        x = on[w, r] / off[w, r]; n++; sum += x; sq += x * x
        if (onc[w, r] != "-" && offc[w, r] != "-") { dc += onc[w, r] - offc[w, r]; nc++ }
      }
      if (n < 2) continue
      mean = sum / n; sd = sqrt((sq - n * mean * mean) / (n - 1)); tq = (n - 1 <= 30 ? t[n - 1] : 1.96)
      printf "audit on/off per round, %s: mean %.3f, sd %.3f, 95%% interval %.3f..%.3f over %d rounds; proxy CPU %+.1f us/txn\n", w, mean, sd, mean - tq * sd / sqrt(n), mean + tq * sd / sqrt(n), n, (nc ? dc / nc : 0)
    }
  }' "$results"
