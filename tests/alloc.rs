//! Allocations per relayed message, counted by a global allocator.
//!
//! The proxy runs on its own thread (a current-thread runtime), and only
//! allocations made on that thread are counted, so the client driver's own
//! allocations do not blur the figure. Steady state means after warm-up:
//! buffers have grown to their working size.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

struct Counting;

static PROXY_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ON_PROXY_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if ON_PROXY_THREAD.try_with(Cell::get).unwrap_or(false) {
        PROXY_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: delegates every call unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Starts pgveil on a dedicated, counted thread.
fn start_counted_proxy() -> std::net::SocketAddr {
    let cfg = common::config();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ON_PROXY_THREAD.with(|c| c.set(true));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let proxy = pgveil::server::Proxy::bind(cfg).await.expect("bind");
            tx.send(proxy.local_addr()).expect("send addr");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("proxy address")
}

#[tokio::test]
async fn zero_allocations_per_relayed_message_in_steady_state() {
    let addr = start_counted_proxy();
    let client = common::connect_to(addr, "postgres", None).await.unwrap();
    let stmt = client
        .prepare("select g, 'guest ' || g from generate_series(1, $1::int4) g")
        .await
        .unwrap();
    let round = |n: usize| {
        let client = &client;
        let stmt = &stmt;
        async move {
            for i in 0..n {
                // Simple protocol: Query → RowDescription, DataRow, CommandComplete, ReadyForQuery.
                client.simple_query("select 1").await.unwrap();
                // Extended protocol, 50 DataRows per execution.
                let rows = client.query(stmt, &[&50i32]).await.unwrap();
                assert_eq!(rows.len(), 50, "round {i}");
            }
        }
    };
    round(300).await; // warm-up: buffers reach their working size
    let before = PROXY_ALLOCS.load(Ordering::Relaxed);
    let n = 2000;
    round(n).await;
    let allocs = PROXY_ALLOCS.load(Ordering::Relaxed) - before;
    // Per round the proxy relays 2 + 3 client frames and about 60 server frames.
    let messages = n as u64 * 65;
    println!("proxy allocations: {allocs} over ~{messages} relayed messages");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations over ~{messages} relayed messages"
    );
}
