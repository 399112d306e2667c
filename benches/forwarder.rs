//! A plain TCP byte forwarder: the floor cost of one user-space hop.
//!
//! It copies bytes both ways without looking at them, on the same tokio
//! runtime pgveil uses, so `benches/pgbench.sh` can tell how much of
//! pgveil's overhead is the hop itself and how much is pgveil's work.
//!
//! Usage: `forwarder LISTEN_ADDR UPSTREAM_ADDR [WORKERS]`. Run by
//! `cargo bench` without arguments it does nothing.

use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        return Ok(());
    };
    let workers = args.get(2).and_then(|w| w.parse().ok()).unwrap_or(0);
    let upstream = upstream.clone();
    pgveil::server::runtime(workers)?.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (mut client, _) = listener.accept().await?;
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    })
}
