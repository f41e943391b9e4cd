//! The Tyrant port under hostile or careless clients: lying length prefixes, random
//! bytes, truncated and trickled frames, oversized frames and replies, pipelining,
//! crowds of idle connections, and shutdown with connections open.
//!
//! A bad connection is closed alone; every test also checks that another connection
//! is still answered. Waits are bounded; the only sleeps are short ones around the
//! frame timeout.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use common::tyrant::{OK, Outcome, Tyrant};
use tidemark::tyrant::client::{self, Reply, Request, cmd};
use tidemark::tyrant::wire;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep, timeout};

/// Well below the default 30 s frame timeout: "closed within this" means the server
/// did not wait for the bytes a header promised.
const AT_ONCE: Duration = Duration::from_secs(2);

/// A frame timeout short enough to wait out in a test.
const FRAME_TIMEOUT: Duration = Duration::from_millis(200);

async fn server_with_frame_timeout(frame_timeout: Duration) -> TestServer {
    TestServer::start_with(|c| c.tyrant_frame_timeout = frame_timeout).await
}

/// A put/get round trip on a fresh connection: the server still serves others.
async fn still_serves(addr: SocketAddr, key: &[u8]) {
    let mut other = Tyrant::connect(addr).await;
    assert_eq!(other.put(key, b"alive").await, OK);
    assert_eq!(other.get(key).await, Some(b"alive".to_vec()));
}

fn be32(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

/// A deterministic byte source (xorshift64*), so random-input tests replay exactly.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 56) as u8).collect()
    }
}

// ---- lying length prefixes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_length_prefixes_close_the_connection_at_once() {
    let server = TestServer::start().await;
    // A connection opened before, kept open throughout.
    let mut bystander = Tyrant::connect(server.tyrant).await;
    assert_eq!(bystander.put(b"before", b"v").await, OK);

    let headers: Vec<(&str, Vec<u8>)> = vec![
        (
            "put vsiz 0x7FFFFFFF",
            [&[wire::MAGIC, cmd::PUT][..], &be32(1), &be32(0x7FFF_FFFF)].concat(),
        ),
        (
            "put ksiz 0x7FFFFFFF",
            [&[wire::MAGIC, cmd::PUT][..], &be32(0x7FFF_FFFF), &be32(1)].concat(),
        ),
        (
            "put vsiz negative",
            [&[wire::MAGIC, cmd::PUT][..], &be32(1), &be32(0x8000_0000)].concat(),
        ),
        (
            "get ksiz 256 MiB (the reference's own cap)",
            [&[wire::MAGIC, cmd::GET][..], &be32(256 << 20)].concat(),
        ),
        (
            "mget count 0x7FFFFFFF",
            [&[wire::MAGIC, cmd::MGET][..], &be32(0x7FFF_FFFF)].concat(),
        ),
        (
            "mget count ok, key length 0x7FFFFFFF",
            [&[wire::MAGIC, cmd::MGET][..], &be32(2), &be32(0x7FFF_FFFF)].concat(),
        ),
        (
            "misc argc 0x7FFFFFFF",
            [
                &[wire::MAGIC, cmd::MISC][..],
                &be32(3),
                &be32(0),
                &be32(0x7FFF_FFFF),
            ]
            .concat(),
        ),
        (
            "ext value 0x7FFFFFFF",
            [
                &[wire::MAGIC, cmd::EXT][..],
                &be32(5),
                &be32(0),
                &be32(1),
                &be32(0x7FFF_FFFF),
            ]
            .concat(),
        ),
        (
            "ext name 1024",
            [
                &[wire::MAGIC, cmd::EXT][..],
                &be32(1024),
                &be32(0),
                &be32(1),
                &be32(1),
            ]
            .concat(),
        ),
    ];
    for (what, header) in headers {
        let mut hostile = Tyrant::connect(server.tyrant).await;
        let started = Instant::now();
        hostile.send_raw(&header).await;
        assert_eq!(
            hostile.outcome_within(AT_ONCE).await,
            Outcome::Closed,
            "{what}: closed without a reply"
        );
        assert!(started.elapsed() < AT_ONCE, "{what}");
        // The bystander's connection was not disturbed.
        assert_eq!(
            bystander.get(b"before").await,
            Some(b"v".to_vec()),
            "{what}"
        );
    }
    still_serves(server.tyrant, b"after").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_command_and_non_binary_lines_close_only_that_connection() {
    let server = TestServer::start().await;
    let mut bystander = Tyrant::connect(server.tyrant).await;
    for junk in [
        &[wire::MAGIC, 0xFF][..],
        b"PATCH / HTTP/1.1\r\n\r\n",
        b"cas k 0 0 1 1\r\n",
        b"\n",
    ] {
        let mut bad = Tyrant::connect(server.tyrant).await;
        bad.send_raw(junk).await;
        assert_eq!(
            bad.outcome_within(AT_ONCE).await,
            Outcome::Closed,
            "{junk:?}"
        );
        assert_eq!(bystander.rnum().await, 0);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_close_that_connection_only() {
    let server = server_with_frame_timeout(Duration::from_millis(300)).await;
    let mut bystander = Tyrant::connect(server.tyrant).await;
    assert_eq!(bystander.put(b"bystander", b"v").await, OK);
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    for round in 0..12 {
        let len = [1, 2, 7, 64, 1000, 4096][round % 6];
        let mut bytes = noise.bytes(len);
        // Half the rounds start like a binary request, to get past the magic byte.
        if round % 2 == 1 {
            bytes[0] = wire::MAGIC;
            if let Some(command) = bytes.get_mut(1) {
                // A real command, but not repl/vanish/copy, so the store and the
                // host's files are left alone whatever follows.
                let safe = [cmd::PUT, cmd::GET, cmd::MGET, cmd::MISC, cmd::EXT, cmd::OUT];
                *command = safe[round % safe.len()];
            }
        } else if bytes[0] == wire::MAGIC {
            bytes[0] = 0;
        }
        let mut random = Tyrant::connect(server.tyrant).await;
        random.send_raw(&bytes).await;
        // Malformed: closed at once. Incomplete (a frame or a text line still
        // waiting): closed by the frame timeout. Either way, closed.
        assert!(
            random.closes_within(Duration::from_secs(3)).await,
            "round {round}: {len} random bytes left the connection open"
        );
        assert_eq!(
            bystander.get(b"bystander").await,
            Some(b"v".to_vec()),
            "round {round}"
        );
    }
    still_serves(server.tyrant, b"after").await;
    server.stop().await;
}

// ---- truncated frames and the frame timeout ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_closed_after_the_frame_timeout() {
    let server = server_with_frame_timeout(FRAME_TIMEOUT).await;
    let mut truncated = Tyrant::connect(server.tyrant).await;
    // A put promising 4 + 6 bytes, cut short after 3 of them.
    let mut put = Vec::new();
    client::encode(
        &Request::Put {
            key: b"key1".to_vec(),
            value: b"value1".to_vec(),
        },
        &mut put,
    );
    let started = Instant::now();
    truncated.send_raw(&put[..put.len() - 7]).await;
    // Not before the timeout...
    assert_eq!(
        truncated.outcome_within(FRAME_TIMEOUT / 2).await,
        Outcome::Open
    );
    // ...but soon after it, without a reply.
    assert_eq!(
        truncated.outcome_within(Duration::from_secs(3)).await,
        Outcome::Closed
    );
    let waited = started.elapsed();
    assert!(
        waited >= FRAME_TIMEOUT && waited < FRAME_TIMEOUT + Duration::from_secs(2),
        "closed after {waited:?}"
    );
    // The half-sent put was not applied.
    let mut other = Tyrant::connect(server.tyrant).await;
    assert_eq!(other.get(b"key1").await, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_outlive_the_frame_timeout() {
    let server = server_with_frame_timeout(FRAME_TIMEOUT).await;
    // One never sent anything; one finished a request and went quiet.
    let mut silent = Tyrant::connect(server.tyrant).await;
    let mut quiet = Tyrant::connect(server.tyrant).await;
    assert_eq!(quiet.put(b"k", b"v").await, OK);
    // A putnr is complete without a reply: nothing is pending afterwards either.
    quiet.putnr(b"nr", b"v").await;
    sleep(FRAME_TIMEOUT * 3).await;
    assert_eq!(silent.outcome_within(Duration::ZERO).await, Outcome::Open);
    assert_eq!(silent.get(b"k").await, Some(b"v".to_vec()));
    assert_eq!(quiet.get(b"nr").await, Some(b"v".to_vec()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_trickled_byte_by_byte_is_closed_at_the_frame_timeout() {
    let frame_timeout = Duration::from_millis(300);
    let server = server_with_frame_timeout(frame_timeout).await;
    let mut slow = Tyrant::connect(server.tyrant).await;
    let mut put = Vec::new();
    client::encode(
        &Request::Put {
            key: b"slowloris".to_vec(),
            value: vec![b'x'; 40],
        },
        &mut put,
    );
    // One byte every 100 ms: each read arrives well within the timeout, but the frame
    // as a whole would take 5.9 s.
    let started = Instant::now();
    let mut closed_after = None;
    for byte in &put {
        if slow.stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        if slow.outcome_within(Duration::from_millis(100)).await == Outcome::Closed {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a trickled frame must not be allowed to finish");
    assert!(
        closed_after < frame_timeout + Duration::from_secs(1),
        "closed only after {closed_after:?}"
    );
    still_serves(server.tyrant, b"after").await;
    let mut other = Tyrant::connect(server.tyrant).await;
    assert_eq!(other.get(b"slowloris").await, None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_timeout_restarts_for_each_pipelined_frame() {
    let server = server_with_frame_timeout(Duration::from_millis(400)).await;
    let mut client = Tyrant::connect(server.tyrant).await;
    // Complete requests sent in pieces, each finished well within the timeout, for
    // longer than the timeout in total: each frame gets its own time.
    for i in 0..6u8 {
        let mut put = Vec::new();
        client::encode(
            &Request::Put {
                key: vec![b'k', i],
                value: b"v".to_vec(),
            },
            &mut put,
        );
        let (head, tail) = put.split_at(5);
        client.send_raw(head).await;
        sleep(Duration::from_millis(100)).await;
        client.send_raw(tail).await;
        assert_eq!(client.reply(cmd::PUT).await, OK, "put {i}");
    }
    assert_eq!(client.rnum().await, 6);
    server.stop().await;
}

// ---- sizes ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_the_max_frame_size_closes_the_connection() {
    let server = TestServer::start().await;
    let max_value = server.config.limits.max_value_bytes;
    let (_, max_frame) = tidemark::tyrant::Settings::limits_for(
        server.config.limits.max_key_bytes,
        server.config.limits.max_value_bytes,
    );
    // misc putlist: every field within the caps (arguments of max_value bytes, a
    // modest count), but the frame as a whole announces far more than max_frame.
    let args = u32::try_from(max_frame / max_value * 4).expect("small count");
    let mut head = vec![wire::MAGIC, cmd::MISC];
    head.extend(be32(7));
    head.extend(be32(1));
    head.extend(be32(args));
    head.extend(b"putlist");
    let arg_len = be32(u32::try_from(max_value).expect("fits"));
    let chunk = vec![b'k'; max_value];

    let mut big = Tyrant::connect(server.tyrant).await;
    big.send_raw(&head).await;
    let (mut read_half, mut write_half) = big.stream.into_split();
    // Keep sending until the server stops taking bytes; at most the whole frame.
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        for _ in 0..args {
            if write_half.write_all(&arg_len).await.is_err()
                || write_half.write_all(&chunk).await.is_err()
            {
                break;
            }
            sent += 4 + chunk.len();
        }
        sent
    });
    let mut sink = vec![0u8; 1 << 16];
    let read = timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut read_half, &mut sink),
    )
    .await;
    let closed = match read {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(n)) => panic!("{n} reply bytes to an oversized frame"),
        Err(_) => false,
    };
    assert!(closed, "the connection stayed open");
    let sent = timeout(Duration::from_secs(10), writer)
        .await
        .expect("the writer stops once the server closes")
        .expect("writer task");
    assert!(
        sent < args as usize * (4 + max_value),
        "the server read the whole {args}-argument frame"
    );
    let mut other = Tyrant::connect(server.tyrant).await;
    assert_eq!(other.rnum().await, 0, "nothing of the frame was applied");
    still_serves(server.tyrant, b"after").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_one_big_value_many_times_fails_without_building_a_giant_reply() {
    let server = TestServer::start().await;
    let max_value = server.config.limits.max_value_bytes;
    let mut client = Tyrant::connect(server.tyrant).await;
    assert_eq!(client.put(b"big", &vec![b'x'; max_value]).await, OK);

    // 65 536 copies of one key: a 448 KiB request asking for a 64 GiB reply.
    let keys = vec![b"big".to_vec(); 65_536];
    let started = Instant::now();
    // mget: refused with the failure status (and count) a C client can read.
    client.send(&Request::Mget { keys: keys.clone() }).await;
    assert_eq!(client.reply(cmd::MGET).await, Reply::Status(1));
    // misc getlist: the same, as misc's failure.
    let getlist = Request::Misc {
        name: b"getlist".to_vec(),
        opts: 1,
        args: keys,
    };
    assert_eq!(client.call(getlist).await, Reply::Status(1));
    assert!(started.elapsed() < Duration::from_secs(10));

    // The server kept its memory; the same connection still works, and a sane mget of
    // the same value (duplicates included) is answered in full.
    let lines = client.stat().await;
    let rss: u64 = lines
        .iter()
        .find(|(n, _)| n == "memrss")
        .and_then(|(_, v)| v.parse().ok())
        .expect("memrss");
    assert!(rss < 2 << 30, "resident set grew to {rss} bytes");
    let reply = client
        .call(Request::Mget {
            keys: vec![b"big".to_vec(), b"missing".to_vec(), b"big".to_vec()],
        })
        .await;
    let Reply::KvList(records) = reply else {
        panic!("mget answers records");
    };
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|(k, v)| k == b"big" && v.len() == max_value)
    );
    server.stop().await;
}

// ---- pipelining and crowds ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start().await;
    let mut client = Tyrant::connect(server.tyrant).await;
    let mut batch = Vec::new();
    for i in 0..100 {
        client::encode(
            &Request::Put {
                key: format!("key{i:03}").into_bytes(),
                value: format!("value{i}").into_bytes(),
            },
            &mut batch,
        );
    }
    // putnr in the middle answers nothing and is still applied in order.
    client::encode(
        &Request::PutNr {
            key: b"key000".to_vec(),
            value: b"overwritten".to_vec(),
        },
        &mut batch,
    );
    for i in (0..100).rev() {
        client::encode(
            &Request::Get {
                key: format!("key{i:03}").into_bytes(),
            },
            &mut batch,
        );
    }
    client::encode(&Request::Rnum, &mut batch);
    client.send_raw(&batch).await;
    for i in 0..100 {
        assert_eq!(client.reply(cmd::PUT).await, OK, "put {i}");
    }
    for i in (0..100).rev() {
        let expected = if i == 0 {
            b"overwritten".to_vec()
        } else {
            format!("value{i}").into_bytes()
        };
        assert_eq!(
            client.reply(cmd::GET).await,
            Reply::Blob(expected),
            "get {i}"
        );
    }
    assert_eq!(client.reply(cmd::RNUM).await, Reply::U64(100));
    assert_eq!(
        client.outcome_within(Duration::from_millis(50)).await,
        Outcome::Open,
        "nothing extra was sent"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_gets_of_large_values_stream_to_a_client_that_reads_slowly() {
    let server = TestServer::start().await;
    let mut client = Tyrant::connect(server.tyrant).await;
    let value: Vec<u8> = (0..256 << 10).map(|i: usize| (i % 251) as u8).collect();
    assert_eq!(client.put(b"v", &value).await, OK);
    // 200 gets of 256 KiB: a 50 MiB answer to a 1.4 KiB request.
    let mut batch = Vec::new();
    for _ in 0..200 {
        client::encode(&Request::Get { key: b"v".to_vec() }, &mut batch);
    }
    client::encode(&Request::Rnum, &mut batch);
    client.send_raw(&batch).await;
    sleep(Duration::from_millis(200)).await;
    for i in 0..200 {
        assert_eq!(
            client.reply(cmd::GET).await,
            Reply::Blob(value.clone()),
            "get {i}"
        );
    }
    assert_eq!(client.reply(cmd::RNUM).await, Reply::U64(1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_idle_connections_stay_open_and_a_new_client_is_answered_promptly() {
    let server = TestServer::start().await;
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(Tyrant::connect(server.tyrant).await);
    }
    // A few of them are mid-conversation: one finished request each.
    for conn in idle.iter_mut().step_by(50) {
        assert_eq!(conn.rnum().await, 0);
    }
    let started = Instant::now();
    still_serves(server.tyrant, b"newcomer").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a new client waited {:?}",
        started.elapsed()
    );
    // Every idle connection is still open and answered.
    for (i, conn) in idle.iter_mut().enumerate() {
        conn.send(&Request::Vsiz {
            key: b"newcomer".to_vec(),
        })
        .await;
        assert_eq!(conn.reply(cmd::VSIZ).await, Reply::U32(5), "connection {i}");
    }
    server.stop().await;
}

// ---- shutdown ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_promptly_with_idle_connections_open() {
    let server = TestServer::start().await;
    let mut open = Vec::new();
    for i in 0..20u8 {
        let mut conn = Tyrant::connect(server.tyrant).await;
        if i % 2 == 0 {
            assert_eq!(conn.put(&[i], b"v").await, OK);
        }
        open.push(conn);
    }
    let started = Instant::now();
    timeout(Duration::from_secs(3), server.stop())
        .await
        .expect("stop() finished within 3 s with idle connections open");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Their connections were closed, not left hanging.
    for (i, conn) in open.iter_mut().enumerate() {
        assert_eq!(
            conn.outcome_within(Duration::from_secs(1)).await,
            Outcome::Closed,
            "connection {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_a_half_sent_request_no_longer_than_the_frame_timeout() {
    let server = server_with_frame_timeout(Duration::from_millis(300)).await;
    let mut idle = Tyrant::connect(server.tyrant).await;
    let mut half = Tyrant::connect(server.tyrant).await;
    half.send_raw(&[wire::MAGIC, cmd::GET, 0, 0, 0, 9, b'k'])
        .await;
    // Let the server see the partial frame before asking it to stop.
    assert_eq!(
        half.outcome_within(Duration::from_millis(50)).await,
        Outcome::Open
    );
    let started = Instant::now();
    timeout(Duration::from_secs(3), server.stop())
        .await
        .expect("stop() is bounded by the frame timeout, not the client");
    assert!(started.elapsed() < Duration::from_secs(3));
    for conn in [&mut idle, &mut half] {
        assert_eq!(
            conn.outcome_within(Duration::from_secs(1)).await,
            Outcome::Closed
        );
    }
}
