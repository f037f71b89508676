//! What the listeners and connections of every protocol share (the server's binary and HTTP
//! ports, peer links, the client): the byte stream a connection runs over, and the check that
//! no other server listens on an address.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

/// How long a listener found on a server's address may take to go away (a killed server's,
/// still being torn down) before the server gives up.
const LISTENER_GONE_WAIT: Duration = Duration::from_secs(5);

/// A connection's byte stream: glommio's `TcpStream`, or a TLS stream over it.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Unpin + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + 'static> ByteStream for S {}

/// Fails if another socket listens on `address`. Each core binds its own listener to the one
/// address with SO_REUSEPORT (glommio's), which would as well let a second server on the
/// machine bind it and take a share of the connections: core 0 first tries to connect there.
/// (Binding without SO_REUSEPORT to find out is no test: connections a killed server left
/// half-closed hold the port against it for a while, though nothing listens.) A server killed
/// a moment ago still listens until the kernel has torn down its io_uring rings, so a
/// listener is waited on for a few seconds before it counts as another server.
pub(crate) fn check_unused(address: SocketAddr) -> Result<(), String> {
    if address.port() == 0 {
        return Ok(());
    }
    let mut probe = address;
    if probe.ip().is_unspecified() {
        probe.set_ip(match probe {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    // A listener takes the connection, or lets it time out once its backlog is full (one that
    // does not accept, as this probe's own connections pile up in it); refused, none listens.
    let listening = || match std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500)) {
        Ok(_) => true,
        Err(error) => error.kind() == std::io::ErrorKind::TimedOut,
    };
    let deadline = Instant::now() + LISTENER_GONE_WAIT;
    while listening() {
        if Instant::now() > deadline {
            return Err(format!("cannot listen on {address}: another server listens there"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
