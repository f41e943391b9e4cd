//! The accept loop both binary-protocol ports (Tokyo Tyrant, memcached) run: an
//! allow-list and a connection cap checked per connection, a back-off when `accept`
//! fails, and — once shutdown is requested — no new connections while the open ones
//! finish the request they are in. And the buffer bounds their connection loops share.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;

/// A connection's pending replies are sent once they reach this size, even
/// mid-pipeline.
pub const OUTBOX_FLUSH_BYTES: usize = 64 << 10;

/// Largest read buffer an idle connection keeps.
pub const INBOX_KEEP_BYTES: usize = 1 << 20;

/// Who may connect, and how many at once.
pub struct Admission<'a> {
    /// The port's name in log lines ("Tyrant", "memcached").
    pub name: &'static str,
    pub allows: &'a (dyn Fn(IpAddr) -> bool + Sync),
    pub max_connections: usize,
}

/// Accept connections on `listener` until `shutdown` is requested, running `handle`
/// for each admitted one on its own task; then wait for open connections to close.
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    admission: Admission<'_>,
    shutdown: Shutdown,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let name = admission.name;
    let mut connections = JoinSet::new();
    let stopping = shutdown.requested();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    if !(admission.allows)(peer.ip()) {
                        tracing::warn!(%peer, "{name} connection refused by --tyrant-allow");
                        continue;
                    }
                    if connections.len() >= admission.max_connections {
                        tracing::warn!(%peer, limit = admission.max_connections, "{name} connection limit reached; closing");
                        continue;
                    }
                    connections.spawn(handle(socket, peer, shutdown.clone()));
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "{name} accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stopping => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
