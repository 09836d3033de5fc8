//! The HTTP listener: every accepted connection gets `TCP_NODELAY`.
//!
//! Without it the kernel's Nagle algorithm holds a small write back while an earlier one is
//! unacknowledged, and a client that delays its ACKs (most do, by up to 40 ms) then sees a
//! response written in two parts (an SSE stream's headers, then its first event) arrive
//! 40 ms late. Responses here are written whole by hyper, so there is nothing for Nagle to
//! coalesce: turning it off costs nothing.

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// `listener`, setting `TCP_NODELAY` on each connection it accepts.
pub fn nodelay(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(set_nodelay as fn(&mut TcpStream))
}

fn set_nodelay(stream: &mut TcpStream) {
    // Fails only for a socket the peer has already reset; serving it fails at once anyway.
    if let Err(e) = stream.set_nodelay(true) {
        let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::debug!(error = %e, %peer, "could not set TCP_NODELAY on an accepted connection");
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use axum::serve::Listener;

    use super::*;

    async fn accepted<L: Listener<Io = TcpStream>>(mut listener: L, addr: SocketAddr) -> TcpStream {
        let _client = TcpStream::connect(addr).await.expect("connects");
        listener.accept().await.0
    }

    #[tokio::test]
    async fn an_accepted_connection_has_nodelay_set() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let stream = accepted(nodelay(listener), addr).await;
        assert!(stream.nodelay().expect("getsockopt"), "TCP_NODELAY is set");
    }

    #[tokio::test]
    async fn a_plain_listener_leaves_nagle_on() {
        // The control: what the kernel does by default, so the test above proves something.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let addr = listener.local_addr().expect("an address");
        let stream = accepted(listener, addr).await;
        assert!(!stream.nodelay().expect("getsockopt"));
    }
}
