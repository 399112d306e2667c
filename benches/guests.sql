-- pgbench workload on a guests table with three protected columns (name,
-- phone, id_number): insert one guest, look one up by phone, update one.
-- Run with -M prepared so statements are planned once per connection.
\set n random(1, 100000000)
INSERT INTO bench_guests (name, phone, id_number, note) VALUES ('guest', :n, :n, 'bench');
SELECT id FROM bench_guests WHERE phone = :n;
UPDATE bench_guests SET name = 'renamed' WHERE phone = :n;
