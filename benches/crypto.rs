//! Field encryption benchmarks: pgveil encrypt/decrypt of a 16-byte phone
//! number, a 64-byte address and a 1 KiB text in both modes, next to
//! ring's raw AES-256-GCM seal/open of the same sizes, so the cost of the
//! envelope, canonicalization and nonce generation is visible.
//!
//! Run: `cargo bench --bench crypto -- --warm-up-time 1 --measurement-time 3`.
//! After criterion's report, a summary prints operations per second and the
//! ratio of each pgveil operation to the raw ring operation of the same
//! size (targets: ≥ 2 M/s for 16 bytes, ratio ≤ 2).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use pgveil::crypto::{ColumnCipher, Format, Keyring, LogicalType, MasterKey, Mode};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const SIZES: [(&str, usize); 3] = [("phone_16B", 16), ("address_64B", 64), ("text_1KiB", 1024)];

fn value(len: usize) -> Vec<u8> {
    // Printable ASCII, valid text.
    (0..len).map(|i| b'0' + (i % 10) as u8).collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    randomized: ColumnCipher,
    searchable: ColumnCipher,
    raw: LessSafeKey,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let kr = Keyring::init(dir.path(), &MasterKey::from_bytes([7; 32]), None).expect("keyring");
    let col = "public.guests.phone";
    Setup {
        randomized: kr
            .column(col, LogicalType::Text, Mode::Randomized)
            .expect("cipher"),
        searchable: kr
            .column(col, LogicalType::Text, Mode::Searchable)
            .expect("cipher"),
        raw: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).expect("key")),
        _dir: dir,
    }
}

fn raw_seal(key: &LessSafeKey, pt: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(pt);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([3; 12]),
            Aad::from(b"aad"),
            buf,
        )
        .expect("seal");
    buf.extend_from_slice(tag.as_ref());
}

fn raw_open(key: &LessSafeKey, ct: &[u8], buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(ct);
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key([3; 12]),
            Aad::from(b"aad"),
            buf,
        )
        .expect("open")
        .len();
    buf.truncate(n);
}

/// The operations compared, each a closure over a reused output buffer.
type Op<'a> = Box<dyn FnMut(&mut Vec<u8>) + 'a>;

fn ops<'a>(
    s: &'a Setup,
    pt: &'a [u8],
    env_r: &'a [u8],
    env_s: &'a [u8],
    raw_ct: &'a [u8],
) -> Vec<(&'static str, Op<'a>)> {
    vec![
        (
            "ring_seal",
            Box::new(move |b| raw_seal(&s.raw, black_box(pt), b)),
        ),
        (
            "ring_open",
            Box::new(move |b| raw_open(&s.raw, black_box(raw_ct), b)),
        ),
        (
            "encrypt_randomized",
            Box::new(move |b| {
                b.clear();
                s.randomized
                    .encrypt(black_box(pt), Format::Text, b)
                    .expect("enc")
            }),
        ),
        (
            "encrypt_searchable",
            Box::new(move |b| {
                b.clear();
                s.searchable
                    .encrypt(black_box(pt), Format::Text, b)
                    .expect("enc")
            }),
        ),
        (
            "decrypt_randomized",
            Box::new(move |b| {
                b.clear();
                s.randomized
                    .decrypt(black_box(env_r), Format::Text, b)
                    .expect("dec")
            }),
        ),
        (
            "decrypt_searchable",
            Box::new(move |b| {
                b.clear();
                s.searchable
                    .decrypt(black_box(env_s), Format::Text, b)
                    .expect("dec")
            }),
        ),
    ]
}

struct Inputs {
    pt: Vec<u8>,
    env_r: Vec<u8>,
    env_s: Vec<u8>,
    raw_ct: Vec<u8>,
}

fn inputs(s: &Setup, len: usize) -> Inputs {
    let pt = value(len);
    let mut env_r = Vec::new();
    s.randomized
        .encrypt(&pt, Format::Text, &mut env_r)
        .expect("enc");
    let mut env_s = Vec::new();
    s.searchable
        .encrypt(&pt, Format::Text, &mut env_s)
        .expect("enc");
    let mut raw_ct = Vec::new();
    raw_seal(&s.raw, &pt, &mut raw_ct);
    Inputs {
        pt,
        env_r,
        env_s,
        raw_ct,
    }
}

fn bench(c: &mut Criterion) {
    let s = setup();
    for (name, len) in SIZES {
        let i = inputs(&s, len);
        let mut g = c.benchmark_group(format!("field/{name}"));
        g.throughput(Throughput::Elements(1));
        for (op, mut f) in ops(&s, &i.pt, &i.env_r, &i.env_s, &i.raw_ct) {
            let mut buf = Vec::with_capacity(len + 64);
            g.bench_function(op, |b| b.iter(|| f(&mut buf)));
        }
        g.finish();
    }
}

/// Times each operation for a fixed wall-clock budget and prints ops/s
/// and the ratio to ring's raw seal (encrypt) or open (decrypt).
fn summary() {
    let s = setup();
    println!("\nField encryption summary (one core, ops/s; ratio = time / ring raw of same size):");
    println!(
        "{:<12} {:<20} {:>14} {:>8}",
        "size", "operation", "ops/s", "ratio"
    );
    for (name, len) in SIZES {
        let i = inputs(&s, len);
        let mut ns = Vec::new();
        for (op, mut f) in ops(&s, &i.pt, &i.env_r, &i.env_s, &i.raw_ct) {
            let mut buf = Vec::with_capacity(len + 64);
            for _ in 0..10_000 {
                f(&mut buf);
            }
            let budget = Duration::from_millis(400);
            let start = Instant::now();
            let mut n: u64 = 0;
            while start.elapsed() < budget {
                for _ in 0..1000 {
                    f(&mut buf);
                }
                n += 1000;
            }
            let per = start.elapsed().as_nanos() as f64 / n as f64;
            ns.push((op, per));
        }
        let seal = ns[0].1;
        let open = ns[1].1;
        for (op, per) in &ns {
            let base = if op.contains("encrypt") || *op == "ring_seal" {
                seal
            } else {
                open
            };
            println!(
                "{:<12} {:<20} {:>14.0} {:>8.2}",
                name,
                op,
                1e9 / per,
                per / base
            );
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
