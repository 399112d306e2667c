//! The audit trail's per-record cost on the session's path: sealing one
//! statement record of the read mix (five protected columns) into the
//! chain — its JSON written by hand, one SHA-256 pass over the line, the
//! HMAC under a fresh key, the link and the next key — with the statement's
//! fingerprint, tables and columns written afresh (a statement without a
//! query), copied (a query's first record in a file) or referred to by id
//! (later executions of a prepared statement). For comparison: the
//! same chain step for a small event through serde, and SHA-256 alone over
//! a line of the same length.

use criterion::{criterion_group, criterion_main, Criterion};
use pgveil::audit::chain::{Chain, Head, GENESIS};
use pgveil::audit::record::{ColumnUse, Stamped, StatementView};
use pgveil::audit::{ColumnAction, Event, Outcome};
use std::hint::black_box;
use std::time::SystemTime;

fn columns() -> Vec<ColumnUse> {
    [
        ("name", ColumnAction::Clear),
        ("phone", ColumnAction::Clear),
        ("id_number", ColumnAction::Clear),
        ("email", ColumnAction::Clear),
        ("address", ColumnAction::Clear),
    ]
    .into_iter()
    .map(|(c, action)| ColumnUse {
        column: format!("public.bench_guests.{c}").into(),
        action,
    })
    .collect()
}

fn view<'a>(shown: &'a [ColumnUse], written: Option<&'a Head>) -> StatementView<'a> {
    StatementView {
        conn: 8,
        user: "bench_manager",
        role: Some("manager"),
        fingerprint: Some(
            "SELECT name, phone, id_number, email, address FROM bench_guests WHERE phone = ?;",
        ),
        shown,
        planned: shown,
        rows: 1,
        bytes: 187,
        affected: Some(1),
        outcome: Outcome::Ok,
        sqlstate: None,
        duration_us: 41,
        approval: None,
        written,
    }
}

fn bench(c: &mut Criterion) {
    let shown = columns();
    let head = Head::of(&view(&shown, None));
    let mut g = c.benchmark_group("audit");
    let mut chain = Chain::new(0, GENESIS, [7; 32]);
    let mut out = Vec::with_capacity(1 << 20);
    let ts = SystemTime::now();
    g.bench_function("seal_statement_first_execution", |b| {
        b.iter(|| {
            if out.len() > 1 << 19 {
                out.clear();
            }
            chain.seal_statement(ts, black_box(&view(&shown, None)), &mut out);
        })
    });
    g.bench_function("seal_statement_query_copied", |b| {
        b.iter(|| {
            if out.len() > 1 << 19 {
                out.clear();
            }
            chain.new_file();
            chain.seal_statement(ts, black_box(&view(&shown, Some(&head))), &mut out);
        })
    });
    g.bench_function("seal_statement_query_referred", |b| {
        b.iter(|| {
            if out.len() > 1 << 19 {
                out.clear();
            }
            chain.seal_statement(ts, black_box(&view(&shown, Some(&head))), &mut out);
        })
    });
    let reload = Stamped {
        ts,
        event: Event::ConfigReloaded {
            path: "/etc/pgveil/pgveil.toml".into(),
            outcome: "ok".into(),
            detail: None,
        },
    };
    g.bench_function("seal_small_event_serde", |b| {
        b.iter(|| {
            if out.len() > 1 << 19 {
                out.clear();
            }
            chain.seal(black_box(&reload), &mut out).expect("seal");
        })
    });
    out.clear();
    chain.seal_statement(ts, &view(&shown, None), &mut out);
    let line = out.clone();
    out.clear();
    chain.seal_statement(ts, &view(&shown, Some(&head)), &mut out);
    println!(
        "read-mix statement line: {} bytes in full, {} bytes referring to its query",
        line.len(),
        out.len()
    );
    g.bench_function("sha256_of_one_line", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&line)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
