//! Plan lookup costs on the write path: a statement that the pre-filter
//! rules out, a cached plan for a statement that touches protected columns,
//! and a first-time analysis (parse) for comparison. Target: cached lookup
//! under 1 µs.

use criterion::{criterion_group, criterion_main, Criterion};
use pgveil::catalog::{Catalog, TableColumns};
use pgveil::config::Config;
use pgveil::crypto::{Keyring, MasterKey};
use pgveil::rewrite::{Protector, ReadPolicy};
use std::hint::black_box;
use std::path::Path;

fn protector() -> Protector {
    let cfg = Config::parse(
        "[[columns]]\ntable = \"guests\"\ncolumn = \"phone\"\ntype = \"text\"\nencrypt = \"searchable\"\nlevel = 3\n\
         [[columns]]\ntable = \"guests\"\ncolumn = \"name\"\ntype = \"text\"\nencrypt = \"randomized\"\nlevel = 3\n\
         [[columns]]\ntable = \"guests\"\ncolumn = \"id_number\"\ntype = \"text\"\nencrypt = \"searchable\"\nlevel = 4\n",
    )
    .expect("policy");
    let mut cols = TableColumns::new();
    cols.insert(
        ("public".into(), "guests".into()),
        ["id", "name", "phone", "id_number", "note"]
            .iter()
            .enumerate()
            .map(|(i, n)| (16384, i as i16 + 1, n.to_string()))
            .collect(),
    );
    let catalog = Catalog::build(&cfg.columns, &cols).expect("catalog");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring");
    let keyring = Keyring::open(&dir, &MasterKey::demo()).expect("demo keyring");
    let policy = ReadPolicy::from_config(&cfg).expect("read policy");
    Protector::new(catalog, keyring, policy).expect("protector")
}

fn bench(c: &mut Criterion) {
    let p = protector();
    let snap = p.snapshot();
    let mut g = c.benchmark_group("plan");
    let unrelated = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    g.bench_function("prefilter_miss", |b| {
        b.iter(|| snap.plan(black_box(unrelated)))
    });
    let cached =
        "SELECT id, note FROM guests g JOIN stays s ON s.guest_id = g.id WHERE g.phone = $1";
    let _ = snap.plan(cached);
    g.bench_function("cached_protected_statement", |b| {
        b.iter(|| snap.plan(black_box(cached)))
    });
    let mut n = 0u64;
    g.bench_function("first_time_analysis", |b| {
        b.iter(|| {
            n += 1;
            // A new text each time defeats the cache: the full sqlparser cost.
            let sql = format!("INSERT INTO guests (name, phone, note) VALUES ($1, $2, 'n{n}')");
            snap.plan(black_box(&sql))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
