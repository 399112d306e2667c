//! Socket options, in one place so every socket pgveil opens gets the same.

use std::time::Duration;
use tokio::net::TcpStream;

/// Disables Nagle (the protocol is request/response; batching is done by our
/// own buffered writes) and turns on keepalive so a peer that vanished
/// without a FIN is noticed.
pub fn tune(stream: &TcpStream) {
    // Both calls only fail on a socket that is already dead; the next read
    // or write reports that properly, so the error is not interesting here.
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    let _ = sock.set_tcp_keepalive(&keepalive);
}
