//! The accept loop and one task per connection: socket → [`decode`] (binary) or
//! [`text::decode`] (memcached, HTTP), chosen per request → [`Connection::execute`] → reply bytes back, pipelined, with the frame timeout and
//! the buffer caps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::listener::{Admission, INBOX_KEEP_BYTES, OUTBOX_FLUSH_BYTES, accept_loop};
use crate::shutdown::Shutdown;

use super::commands::{After, Connection};
use super::request::{Request, decode};
use super::settings::Shared;
use super::stat;
use super::text::{self, TextRequest};
use super::wire::{FrameError, Limits, MAGIC};

/// Accept connections on `listener` until `shutdown` is requested; then wait for open
/// connections to finish the request they are in and close.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let settings = &shared.settings;
    let admission = Admission {
        name: "Tyrant",
        allows: &|ip| settings.allows(ip),
        max_connections: settings.max_connections,
    };
    accept_loop(listener, admission, shutdown, |socket, peer, stop| {
        handle_connection(socket, peer, shared.clone(), stop)
    })
    .await;
}

async fn handle_connection(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: Shutdown,
) {
    let id = shared.next_connection_id.fetch_add(1, Ordering::Relaxed);
    let _ = socket.set_nodelay(true);
    let metrics = shared.service.metrics().clone();
    metrics.connections.inc();
    let result = run_connection(socket, &shared, stop).await;
    metrics.connections.dec();
    match result {
        Ok(()) => tracing::debug!(%peer, id, "Tyrant connection closed"),
        Err(reason) => tracing::debug!(%peer, id, %reason, "Tyrant connection dropped"),
    }
}

/// Why a connection ended other than a clean close.
#[derive(Debug, thiserror::Error)]
enum Dropped {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("request not completed within the frame timeout")]
    FrameTimeout,
    #[error("request larger than the frame limit")]
    FrameTooLarge,
    #[error("the server asked to close")]
    Close,
}

/// One request of any dialect.
enum Incoming {
    Binary(Request),
    Text(TextRequest),
}

/// The dialect is decided per request from its first byte, as ttserver does: `C8` is
/// binary, anything else a text line (memcached or HTTP).
fn next_request(buf: &[u8], limits: &Limits) -> Result<Option<(Incoming, usize)>, FrameError> {
    match buf.first() {
        None => Ok(None),
        Some(&MAGIC) => Ok(decode(buf, limits)?.map(|(r, used)| (Incoming::Binary(r), used))),
        Some(_) => Ok(text::decode(buf, limits)?.map(|(r, used)| (Incoming::Text(r), used))),
    }
}

async fn run_connection(
    mut socket: TcpStream,
    shared: &Shared,
    stop: Shutdown,
) -> Result<(), Dropped> {
    let fd = stat::socket_fd(&socket);
    let mut conn = Connection::new(shared, fd);
    let mut inbox = BytesMut::with_capacity(4096);
    let mut outbox = Vec::with_capacity(4096);
    // When the request now partly buffered must be complete. Set when its first
    // bytes are seen, not per read: a client trickling one byte at a time must not
    // keep a half-sent request (and its buffer) alive forever.
    let mut frame_deadline: Option<Instant> = None;
    // One wait for the stop signal for the whole connection, not a new one per read.
    let stopping = stop.requested();
    tokio::pin!(stopping);
    loop {
        // Answer every complete request already buffered (pipelining), in order.
        loop {
            match next_request(&inbox, &shared.settings.limits) {
                Ok(Some((request, used))) => {
                    inbox.advance(used);
                    frame_deadline = None;
                    let after = match request {
                        Incoming::Binary(request) => conn.execute(request, &mut outbox).await,
                        Incoming::Text(request) => conn.execute_text(request, &mut outbox).await,
                    };
                    match after {
                        After::Continue => {}
                        After::Close => {
                            socket.write_all(&outbox).await?;
                            return Err(Dropped::Close);
                        }
                    }
                    // Many pipelined requests for big values must not pile up their
                    // replies in memory: send as we go (the socket's backpressure then
                    // paces a client that reads slowly).
                    if outbox.len() >= OUTBOX_FLUSH_BYTES {
                        socket.write_all(&outbox).await?;
                        outbox.clear();
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Replies to earlier requests still go out before the close.
                    socket.write_all(&outbox).await?;
                    return Err(e.into());
                }
            }
        }
        if !outbox.is_empty() {
            socket.write_all(&outbox).await?;
            // Keep a modest buffer, not the largest reply this connection ever sent.
            if outbox.capacity() > OUTBOX_FLUSH_BYTES {
                outbox = Vec::with_capacity(4096);
            } else {
                outbox.clear();
            }
        }
        if inbox.len() > shared.settings.max_frame_bytes {
            return Err(Dropped::FrameTooLarge);
        }
        if stop.is_requested() && inbox.is_empty() {
            return Ok(());
        }
        if inbox.is_empty() && inbox.capacity() > INBOX_KEEP_BYTES {
            // One big request must not pin its buffer for the life of the connection.
            inbox = BytesMut::with_capacity(4096);
        }
        inbox.reserve(8192);
        let read = if inbox.is_empty() {
            // Idle between requests: wait as long as the client likes, or until shutdown.
            tokio::select! {
                // The socket first: a read that is ready needs no look at the stop
                // signal (nor a random branch order); the loop checks it between
                // requests anyway.
                biased;
                read = socket.read_buf(&mut inbox) => read?,
                () = &mut stopping => return Ok(()),
            }
        } else {
            // Inside a request: all of it must arrive within the frame timeout.
            let deadline = *frame_deadline
                .get_or_insert_with(|| Instant::now() + shared.settings.frame_timeout);
            match tokio::time::timeout_at(deadline.into(), socket.read_buf(&mut inbox)).await {
                Ok(read) => read?,
                Err(_) => return Err(Dropped::FrameTimeout),
            }
        };
        if read == 0 {
            // EOF. A truncated request is dropped without a reply, as the reference does.
            return Ok(());
        }
    }
}
