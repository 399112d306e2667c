-- pgbench read-heavy mix on bench_guests (three encrypted columns, shown
-- masked to the bench role): a one-guest lookup and a ten-guest page.
-- Run with -M prepared. Used by benches/pgbench.sh to compare a role with
-- bulk-read limits (pgveil-capped) against the same role without them
-- (pgveil-read); workload guests-guard: the difference is the guard's holding and counting.
\set id random(1, 990)
SELECT name, phone, id_number FROM bench_guests WHERE id = :id;
SELECT id, name, phone FROM bench_guests WHERE id BETWEEN :id AND :id + 9;
