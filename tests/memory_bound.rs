//! Hostile and idle clients must not make the server's memory grow without bound.
//! The server runs in this test process, so its resident size is ours to read.

mod common;

use std::time::Duration;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident set size of this process in bytes (Linux).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_slow_and_lying_clients_on_both_ports_keep_memory_bounded() {
    if rss_bytes() == 0 {
        return; // not Linux: nothing to measure
    }
    let server = TestServer::start_with(|c| {
        c.tyrant_frame_timeout = Duration::from_secs(30);
        c.header_read_timeout = Duration::from_secs(30);
    })
    .await;
    let before = rss_bytes();
    let mut held = Vec::new();
    for i in 0..200 {
        // Idle connections on both ports.
        held.push(TcpStream::connect(server.http).await.expect("http connect"));
        held.push(
            TcpStream::connect(server.tyrant)
                .await
                .expect("tyrant connect"),
        );
        // A Tyrant put that claims a 1 MiB value (the limit) and sends 10 bytes of it,
        // and an HTTP PUT that promises a 1 MiB body and sends a few bytes: each is
        // waiting for data it will never get.
        let mut t = TcpStream::connect(server.tyrant)
            .await
            .expect("tyrant connect");
        let mut frame = vec![0xC8, 0x10];
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&(1u32 << 20).to_be_bytes());
        frame.extend_from_slice(b"kpartial!!");
        t.write_all(&frame).await.expect("partial frame");
        held.push(t);
        let mut h = TcpStream::connect(server.http).await.expect("http connect");
        h.write_all(
            format!(
                "PUT /keys/slow{i} HTTP/1.1\r\nHost: t\r\nX-Write-Timestamp: {}\r\nContent-Length: 1048576\r\n\r\nabc",
                common::T0
            )
            .as_bytes(),
        )
        .await
        .expect("partial body");
        held.push(h);
    }
    // Lying length prefixes: claim 2 GiB; the server must close without allocating it.
    for _ in 0..200 {
        let mut liar = TcpStream::connect(server.tyrant).await.expect("connect");
        let mut frame = vec![0xC8, 0x10];
        frame.extend_from_slice(&1u32.to_be_bytes());
        frame.extend_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
        liar.write_all(&frame).await.expect("send");
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), liar.read(&mut buf))
            .await
            .expect("closed promptly")
            .unwrap_or(0);
        assert_eq!(n, 0, "a lying length prefix gets no answer, only a close");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = rss_bytes().saturating_sub(before);
    // 800 held connections; a few KiB each is fine, a claimed 1 MiB or 2 GiB each is not.
    assert!(
        grown < 96 << 20,
        "resident memory grew by {} MiB",
        grown >> 20
    );
    // And the server still answers.
    let ok = reqwest::get(server.url("/healthz")).await.expect("healthz");
    assert_eq!(ok.status(), 200);
    drop(held);
    server.stop().await;
}
