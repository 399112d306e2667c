//! Socket options, in one place so every socket pgveil opens gets the same.

use crate::config::ProxyConfig;
use tokio::net::TcpStream;

/// Disables Nagle (the protocol is request/response; batching is done by our
/// own buffered writes) and sets keepalive as `[proxy] keepalive` says, so a
/// peer that vanished without a FIN is noticed.
pub fn tune(stream: &TcpStream, cfg: &ProxyConfig) {
    // These calls only fail on a socket that is already dead; the next read
    // or write reports that properly, so the error is not interesting here.
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    if cfg.keepalive.is_zero() {
        let _ = sock.set_keepalive(false);
        return;
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(cfg.keepalive)
        .with_interval(
            cfg.keepalive_interval
                .max(std::time::Duration::from_secs(1)),
        );
    let _ = sock.set_tcp_keepalive(&keepalive);
}
