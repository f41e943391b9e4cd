//! The memcached and HTTP text dialects on the Tyrant port, over raw loopback sockets:
//! what the golden vectors (tests/tyrant_vectors.rs) do not cover — the prefix guard
//! on memcached `set` and HTTP `PUT`, `--tyrant-deny` for text commands, pipelining,
//! mixing dialects on one connection, caps, truncated requests and idle connections.

mod common;

use std::time::Duration;

use common::tyrant::{OK, Outcome, Tyrant};
use common::{T0, TestServer};
use tidemark::config::TyrantGuard;
use tidemark::tyrant::client::{Reply, Request};
use tokio::time::{Instant, timeout};

/// A value whose first 16 digits are its timestamp in µs (the prefix guard's form).
fn stamped(timestamp: u64, rest: &str) -> Vec<u8> {
    format!("{timestamp:016}{rest}").into_bytes()
}

fn mc_set(command: &str, key: &str, value: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{command} {key} 0 0 {}\r\n", value.len()).into_bytes();
    bytes.extend_from_slice(value);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

fn http_put(key: &str, value: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "PUT /{key} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        value.len()
    )
    .into_bytes();
    bytes.extend_from_slice(value);
    bytes
}

/// Read until `expected.len()` bytes have arrived (or 5 s pass), then check them.
async fn expect_reply(conn: &mut Tyrant, expected: &[u8]) {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < expected.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.outcome_within(left).await {
            Outcome::Sent(bytes) => got.extend(bytes),
            other => panic!(
                "{other:?} after {:?}, expected {:?}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected)
            ),
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

async fn text_call(conn: &mut Tyrant, request: &[u8], expected: &[u8]) {
    conn.send_raw(request).await;
    expect_reply(conn, expected).await;
}

const CREATED: &[u8] =
    b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\nCreated\n";
const PUT_FAILED: &[u8] = b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\nInternal Server Error\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_guard_refuses_an_older_memcached_set_and_applies_a_newer_one() {
    let server = TestServer::start_with(|c| c.tyrant_guard = TyrantGuard::Prefix).await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    let v10 = stamped(T0 + 10, "ten");
    text_call(&mut conn, &mc_set("set", "k", &v10), b"STORED\r\n").await;
    // Older and tied timestamps, and a value without digits, are refused.
    let older = mc_set("set", "k", &stamped(T0 + 9, "nine"));
    text_call(&mut conn, &older, b"SERVER_ERROR unexpected\r\n").await;
    let tie = mc_set("set", "k", &stamped(T0 + 10, "tie"));
    text_call(&mut conn, &tie, b"SERVER_ERROR unexpected\r\n").await;
    let no_digits = mc_set("set", "k", b"no digits");
    text_call(&mut conn, &no_digits, b"SERVER_ERROR unexpected\r\n").await;
    assert_eq!(conn.get(b"k").await, Some(v10));
    // Newer applies; add needs an absent key; replace needs a live one and the rule.
    let v11 = stamped(T0 + 11, "eleven");
    text_call(&mut conn, &mc_set("set", "k", &v11), b"STORED\r\n").await;
    assert_eq!(conn.get(b"k").await, Some(v11));
    let add = mc_set("add", "k", &stamped(T0 + 20, "add"));
    text_call(&mut conn, &add, b"NOT_STORED\r\n").await;
    let stale_replace = mc_set("replace", "k", &stamped(T0 + 5, "old"));
    text_call(&mut conn, &stale_replace, b"NOT_STORED\r\n").await;
    let replace_missing = mc_set("replace", "nope", &stamped(T0 + 30, "x"));
    text_call(&mut conn, &replace_missing, b"NOT_STORED\r\n").await;
    let v12 = stamped(T0 + 12, "twelve");
    text_call(&mut conn, &mc_set("replace", "k", &v12), b"STORED\r\n").await;
    assert_eq!(conn.get(b"k").await, Some(v12));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_guard_refuses_an_older_http_put_and_applies_a_newer_one() {
    let server = TestServer::start_with(|c| c.tyrant_guard = TyrantGuard::Prefix).await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    let v10 = stamped(T0 + 10, "ten");
    text_call(&mut conn, &http_put("k", &v10), CREATED).await;
    text_call(
        &mut conn,
        &http_put("k", &stamped(T0 + 9, "nine")),
        PUT_FAILED,
    )
    .await;
    assert_eq!(conn.get(b"k").await, Some(v10));
    let v11 = stamped(T0 + 11, "eleven");
    text_call(&mut conn, &http_put("k", &v11), CREATED).await;
    assert_eq!(conn.get(b"k").await, Some(v11));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_allmc_forbids_every_memcached_command_but_not_http_or_binary() {
    let server = TestServer::start_with(|c| c.tyrant_deny = vec!["allmc".into()]).await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    // The data block is read, so the connection stays in step.
    let set = mc_set("set", "k", b"v");
    text_call(&mut conn, &set, b"CLIENT_ERROR forbidden\r\n").await;
    text_call(&mut conn, b"get k\r\n", b"CLIENT_ERROR forbidden\r\n").await;
    text_call(&mut conn, b"version\r\n", b"CLIENT_ERROR forbidden\r\n").await;
    assert_eq!(conn.get(b"k").await, None);
    text_call(&mut conn, &http_put("k", b"v"), CREATED).await;
    assert_eq!(conn.get(b"k").await, Some(b"v".to_vec()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_by_text_mask_name_forbids_only_that_command() {
    let server = TestServer::start_with(|c| {
        c.tyrant_deny = vec!["MCGET".into(), "httpput".into(), "httphead".into()]
    })
    .await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    text_call(&mut conn, &mc_set("set", "k", b"v"), b"STORED\r\n").await;
    text_call(&mut conn, b"gets k\r\n", b"CLIENT_ERROR forbidden\r\n").await;
    let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nForbidden\n";
    text_call(&mut conn, &http_put("k", b"w"), forbidden).await;
    text_call(
        &mut conn,
        b"HEAD /k HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\n\r\n",
    )
    .await;
    let got =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1\r\n\r\nv";
    text_call(&mut conn, b"GET /k HTTP/1.1\r\n\r\n", got).await;
    // Binary get is not masked by mcget.
    assert_eq!(conn.get(b"k").await, Some(b"v".to_vec()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_allhttp_forbids_http_and_allorg_forbids_binary() {
    let server =
        TestServer::start_with(|c| c.tyrant_deny = vec!["allhttp".into(), "allorg".into()]).await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nForbidden\n";
    text_call(&mut conn, b"DELETE /k HTTP/1.1\r\n\r\n", forbidden).await;
    text_call(&mut conn, &mc_set("set", "k", b"v"), b"STORED\r\n").await;
    assert_eq!(
        conn.call(Request::Get { key: b"k".to_vec() }).await,
        Reply::Status(1)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_text_requests_are_answered_in_order() {
    let server = TestServer::start().await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    let mut batch = mc_set("set", "a", b"1");
    batch.extend(mc_set("append", "a", b"2"));
    batch.extend(b"incr a 5\r\nget a nope\r\ndelete a\r\n");
    batch.extend(http_put("h", b"xy"));
    batch.extend(b"GET /h HTTP/1.1\r\n\r\nDELETE /h HTTP/1.1\r\n\r\nversion\r\n");
    let mut expected =
        b"STORED\r\nSTORED\r\n17\r\nVALUE a 0 2\r\n17\r\nEND\r\nDELETED\r\n".to_vec();
    expected.extend(CREATED);
    expected.extend(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\n\r\nxy",
    );
    expected
        .extend(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nOK\n");
    expected.extend(b"VERSION 1.1.41\r\n");
    text_call(&mut conn, &batch, &expected).await;
    assert_eq!(
        conn.outcome_within(Duration::from_millis(100)).await,
        Outcome::Open
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_text_requests_mix_on_one_connection() {
    let server = TestServer::start().await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    assert_eq!(conn.put(b"k", b"bin").await, OK);
    text_call(&mut conn, b"get k\r\n", b"VALUE k 0 3\r\nbin\r\nEND\r\n").await;
    text_call(&mut conn, &http_put("k", b"http"), CREATED).await;
    assert_eq!(conn.get(b"k").await, Some(b"http".to_vec()));
    // Pipelined across dialects in one send: binary put, memcached get, binary get.
    let mut bytes = Vec::new();
    tidemark::tyrant::client::encode(
        &Request::Put {
            key: b"m".to_vec(),
            value: b"1".to_vec(),
        },
        &mut bytes,
    );
    bytes.extend(b"get m\r\n");
    tidemark::tyrant::client::encode(&Request::Get { key: b"m".to_vec() }, &mut bytes);
    text_call(
        &mut conn,
        &bytes,
        b"\x00VALUE m 0 1\r\n1\r\nEND\r\n\x00\x00\x00\x00\x011",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_commands_bump_the_stat_counters_of_their_binary_kind() {
    let server = TestServer::start().await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    text_call(&mut conn, b"get a b c\r\n", b"END\r\n").await;
    text_call(&mut conn, &mc_set("add", "a", b"1"), b"STORED\r\n").await;
    text_call(&mut conn, b"delete zz\r\n", b"NOT_FOUND\r\n").await;
    let Reply::Blob(stat) = conn.call(Request::Stat).await else {
        panic!("stat reply");
    };
    let stat = String::from_utf8(stat).expect("stat is text");
    for line in [
        "cnt_get\t3",
        "cnt_get_miss\t3",
        "cnt_putkeep\t1",
        "cnt_out\t1",
        "cnt_out_miss\t1",
    ] {
        assert!(stat.lines().any(|l| l == line), "{line} in {stat}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_line_over_the_cap_closes_the_connection() {
    let server = TestServer::start().await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    let mut line = b"get ".to_vec();
    line.extend(vec![b'k'; 70 << 10]);
    conn.send_raw(&line).await;
    assert!(conn.closes_within(Duration::from_secs(5)).await);
    // The server is still up.
    let mut other = Tyrant::connect(server.tyrant).await;
    text_call(&mut other, b"version\r\n", b"VERSION 1.1.41\r\n").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memcached_value_or_http_body_over_max_value_bytes_closes_without_reply() {
    let server = TestServer::start_with(|c| c.limits.max_value_bytes = 16).await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    // Rejected from the command line alone, before any data arrives.
    conn.send_raw(b"set k 0 0 17\r\n").await;
    assert_eq!(
        conn.outcome_within(Duration::from_secs(5)).await,
        Outcome::Closed
    );
    let mut conn = Tyrant::connect(server.tyrant).await;
    conn.send_raw(b"PUT /k HTTP/1.1\r\nContent-Length: 17\r\n\r\n")
        .await;
    assert_eq!(
        conn.outcome_within(Duration::from_secs(5)).await,
        Outcome::Closed
    );
    // At the cap both are stored.
    let mut conn = Tyrant::connect(server.tyrant).await;
    text_call(&mut conn, &mc_set("set", "k", &[b'x'; 16]), b"STORED\r\n").await;
    text_call(&mut conn, &http_put("h", &[b'y'; 16]), CREATED).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_text_request_is_dropped_after_the_frame_timeout() {
    let server =
        TestServer::start_with(|c| c.tyrant_frame_timeout = Duration::from_millis(300)).await;
    for partial in [
        b"set k 0 0 10\r\nabc".as_slice(),
        b"get k",
        b"PUT /k HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
        b"GET /k HTTP/1.1\r\nHost: x\r\n",
    ] {
        let mut conn = Tyrant::connect(server.tyrant).await;
        conn.send_raw(partial).await;
        let started = Instant::now();
        assert_eq!(
            conn.outcome_within(Duration::from_secs(5)).await,
            Outcome::Closed,
            "{:?}",
            String::from_utf8_lossy(partial)
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_between_text_requests_stays_open_past_the_frame_timeout() {
    let server =
        TestServer::start_with(|c| c.tyrant_frame_timeout = Duration::from_millis(200)).await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    text_call(&mut conn, b"version\r\n", b"VERSION 1.1.41\r\n").await;
    assert_eq!(
        conn.outcome_within(Duration::from_millis(600)).await,
        Outcome::Open
    );
    text_call(&mut conn, b"GET /none HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nNot Found\n").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_text_request_then_client_close_gets_no_reply_and_the_server_stays_up() {
    let server = TestServer::start().await;
    let mut conn = Tyrant::connect(server.tyrant).await;
    conn.send_raw(b"set k 0 0 5\r\nab").await;
    drop(conn);
    let mut other = Tyrant::connect(server.tyrant).await;
    let answered = timeout(
        Duration::from_secs(5),
        text_call(&mut other, b"get k\r\n", b"END\r\n"),
    )
    .await;
    assert!(answered.is_ok());
    server.stop().await;
}
