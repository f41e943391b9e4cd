//! Progress on stderr about once a second, and counting wrappers that feed it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::task::JoinHandle;

/// Prints `report()` to stderr every second until dropped.
pub struct Ticker {
    task: JoinHandle<()>,
}

impl Ticker {
    pub fn start(command: &'static str, report: impl Fn() -> String + Send + 'static) -> Self {
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            // The first tick is immediate; nothing has happened yet.
            every.tick().await;
            loop {
                every.tick().await;
                eprintln!("tidemark {command}: {}", report());
            }
        });
        Self { task }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lines (records) and bytes moved so far; cheap to clone and share with a [`Ticker`].
#[derive(Debug, Clone, Default)]
pub struct Tally {
    lines: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    /// Bytes expected in all, when known (0 = unknown).
    total: Arc<AtomicU64>,
}

impl Tally {
    pub fn expect(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }

    /// "12.0 MiB" or, with a known total, "12.0 MiB of 80.0 MiB".
    pub fn describe_bytes(&self) -> String {
        match self.total.load(Ordering::Relaxed) {
            0 => bytes(self.bytes()),
            total => format!("{} of {}", bytes(self.bytes()), bytes(total)),
        }
    }

    pub fn add(&self, chunk: &[u8]) {
        let newlines = chunk.iter().filter(|&&b| b == b'\n').count();
        self.lines.fetch_add(newlines as u64, Ordering::Relaxed);
        self.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }

    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A reader that adds everything it reads to a [`Tally`].
pub struct Counted<R> {
    inner: R,
    tally: Tally,
}

impl<R> Counted<R> {
    pub fn new(inner: R, tally: Tally) -> Self {
        Self { inner, tally }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.tally.add(&buf.filled()[before..]);
        }
        polled
    }
}

/// `n` bytes for humans: "512 B", "1.5 MiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 30), "5.0 GiB");
    }
}
