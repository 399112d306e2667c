-- Read-heavy pgbench mix: look a guest up by phone and return five
-- protected columns (name, phone, id_number, email, address). Run with
-- -M prepared -D rows=N, where guests 1..N have phones 13800000000 + i.
\set n 13800000000 + random(1, :rows)
SELECT name, phone, id_number, email, address FROM bench_guests WHERE phone = :n;
