//! Frame layer micro-benchmarks: cutting a read buffer into frames and
//! queueing them for the other side, as the relay does for every message.
//!
//! A counting allocator reports allocations per relayed frame after the
//! benchmark (target: 0 in steady state).

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgveil::net::{next_frame, Frame};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: delegates every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What a server sends for `pgbench -S`: RowDescription, DataRow,
/// CommandComplete, ReadyForQuery.
fn select_reply() -> Vec<u8> {
    let mut wire = Vec::new();
    let mut rd = 1u16.to_be_bytes().to_vec();
    rd.extend(b"abalance\0");
    rd.extend([0u8; 4 + 2]);
    rd.extend(23u32.to_be_bytes());
    rd.extend(4i16.to_be_bytes());
    rd.extend((-1i32).to_be_bytes());
    rd.extend(0i16.to_be_bytes());
    wire.extend(Frame::from_parts(b'T', &rd).as_bytes());
    let mut dr = 1u16.to_be_bytes().to_vec();
    dr.extend(4i32.to_be_bytes());
    dr.extend(b"1234");
    wire.extend(Frame::from_parts(b'D', &dr).as_bytes());
    wire.extend(Frame::from_parts(b'C', b"SELECT 1\0").as_bytes());
    wire.extend(Frame::from_parts(b'Z', b"I").as_bytes());
    wire
}

/// One read's worth of bytes cut into frames and queued, like the relay.
fn relay_batch(input: &mut BytesMut, out: &mut BytesMut, wire: &[u8]) -> usize {
    input.reserve(16 * 1024);
    input.extend_from_slice(wire);
    let mut n = 0;
    while let Ok(Some(frame)) = next_frame(input, 1 << 30) {
        out.extend_from_slice(frame.as_bytes());
        n += 1;
    }
    out.clear();
    n
}

fn bench(c: &mut Criterion) {
    let reply = select_reply();
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(4));
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut out = BytesMut::with_capacity(64 * 1024);
    g.bench_function("pgbench_select_reply_4_frames", |b| {
        b.iter(|| relay_batch(&mut input, &mut out, &reply))
    });
    let mut rows = Vec::new();
    for i in 0..100u32 {
        let mut dr = 2u16.to_be_bytes().to_vec();
        dr.extend(4i32.to_be_bytes());
        dr.extend(i.to_be_bytes());
        dr.extend(11i32.to_be_bytes());
        dr.extend(b"guest-00000");
        rows.extend(Frame::from_parts(b'D', &dr).as_bytes());
    }
    g.throughput(Throughput::Elements(100));
    g.bench_function("datarows_100", |b| {
        b.iter(|| relay_batch(&mut input, &mut out, &rows))
    });
    g.finish();

    // Allocations per frame in steady state.
    for _ in 0..100 {
        relay_batch(&mut input, &mut out, &rows);
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    let mut frames = 0;
    for _ in 0..10_000 {
        frames += relay_batch(&mut input, &mut out, &rows);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    println!(
        "allocations per relayed frame: {:.4} ({allocs} over {frames} frames)",
        allocs as f64 / frames as f64
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
