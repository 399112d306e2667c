-- pgbench read-heavy workload on the guests table: read one guest's
-- protected columns by id (decrypted for a clearance-4 role), then look
-- one up by phone (searchable equality). Run with -M prepared; the table
-- is seeded with 10,000 guests (phones 13900000001 ...) by benches/pgbench.sh.
\set id random(1, 10000)
\set ph 13900000000 + :id
SELECT name, phone, id_number FROM bench_guests WHERE id = :id;
SELECT id, name FROM bench_guests WHERE phone = :ph;
