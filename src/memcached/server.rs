//! The accept loop and one task per connection, as on the Tyrant port: the same
//! allow-list, connection cap and frame timeout; socket → [`decode`] →
//! [`Connection::execute`] → replies back, pipelined.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::listener::{Admission, INBOX_KEEP_BYTES, OUTBOX_FLUSH_BYTES, accept_loop};
use crate::shutdown::Shutdown;

use super::commands::{After, Connection};
use super::request::decode;
use super::{FLUSH_TICK, Shared};

/// Accept connections on `listener` until `shutdown` is requested; then wait for open
/// connections to finish the request they are in and close.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let ticker = flush_ticker(&shared, shutdown.clone());
    let settings = &shared.settings;
    let admission = Admission {
        name: "memcached",
        allows: &|ip| settings.allows(ip),
        max_connections: settings.max_connections,
    };
    let accepting = accept_loop(listener, admission, shutdown, |socket, peer, stop| {
        let shared = shared.clone();
        async move {
            let counters = &shared.counters;
            counters.total_connections.fetch_add(1, Ordering::Relaxed);
            counters.curr_connections.fetch_add(1, Ordering::Relaxed);
            let result = run_connection(socket, &shared, stop).await;
            shared
                .counters
                .curr_connections
                .fetch_sub(1, Ordering::Relaxed);
            match result {
                Ok(()) => tracing::debug!(%peer, "memcached connection closed"),
                Err(e) => tracing::debug!(%peer, error = %e, "memcached connection dropped"),
            }
        }
    });
    tokio::join!(accepting, ticker);
}

/// Runs a delayed `flush_all` when it falls due even while no request arrives (every
/// request also checks first), until shutdown.
async fn flush_ticker(shared: &Shared, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(FLUSH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => shared.run_due_flush().await,
            () = shutdown.requested() => return,
        }
    }
}

async fn run_connection(
    mut socket: TcpStream,
    shared: &Shared,
    stop: Shutdown,
) -> std::io::Result<()> {
    let _ = socket.set_nodelay(true);
    let mut conn = Connection::new(shared);
    let mut inbox = BytesMut::with_capacity(4096);
    let mut outbox = Vec::with_capacity(4096);
    // Bytes of a refused data block still to be thrown away as they arrive.
    let mut discard = 0usize;
    // When the request now partly buffered must be complete (see the Tyrant port).
    let mut frame_deadline: Option<Instant> = None;
    loop {
        loop {
            if discard > 0 {
                let n = discard.min(inbox.len());
                inbox.advance(n);
                discard -= n;
                if discard > 0 {
                    break;
                }
                frame_deadline = None;
            }
            match decode(&inbox, shared.settings.max_value_bytes) {
                Ok(Some((request, used))) => {
                    inbox.advance(used);
                    frame_deadline = None;
                    shared.run_due_flush().await;
                    let (after, skip) = conn.execute(request, &mut outbox).await;
                    discard = skip;
                    if after == After::Close {
                        socket.write_all(&outbox).await?;
                        return Ok(());
                    }
                    if outbox.len() >= OUTBOX_FLUSH_BYTES {
                        socket.write_all(&outbox).await?;
                        outbox.clear();
                    }
                }
                Ok(None) => break,
                Err(fatal) => {
                    outbox.extend_from_slice(fatal.reply.as_bytes());
                    outbox.extend_from_slice(b"\r\n");
                    socket.write_all(&outbox).await?;
                    return Ok(());
                }
            }
        }
        if !outbox.is_empty() {
            socket.write_all(&outbox).await?;
            if outbox.capacity() > OUTBOX_FLUSH_BYTES {
                outbox = Vec::with_capacity(4096);
            } else {
                outbox.clear();
            }
        }
        if stop.is_requested() && inbox.is_empty() {
            return Ok(());
        }
        if inbox.is_empty() && inbox.capacity() > INBOX_KEEP_BYTES {
            inbox = BytesMut::with_capacity(4096);
        }
        inbox.reserve(8192);
        let read = if inbox.is_empty() && discard == 0 {
            // Idle between requests: wait as long as the client likes, or until shutdown.
            tokio::select! {
                read = socket.read_buf(&mut inbox) => read?,
                () = stop.requested() => return Ok(()),
            }
        } else {
            let deadline = *frame_deadline
                .get_or_insert_with(|| Instant::now() + shared.settings.frame_timeout);
            match tokio::time::timeout_at(deadline.into(), socket.read_buf(&mut inbox)).await {
                Ok(read) => read?,
                Err(_) => return Ok(()), // the frame timeout: close
            }
        };
        if read == 0 {
            return Ok(());
        }
    }
}
