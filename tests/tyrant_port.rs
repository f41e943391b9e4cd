//! The Tokyo Tyrant port over the same service and store as HTTP: cross-protocol
//! reads and writes, the timestamp guard (`ext tsput`/`tsout`, `--tyrant-guard
//! prefix`, server-clock stamps of unguarded writes), per-connection iteration,
//! `rnum`/`stat`, `copy` and `--tyrant-deny`.
//!
//! Everything goes over real loopback sockets. Time only moves through the server's
//! `ManualClock`; nothing here sleeps.

mod common;

use std::collections::BTreeSet;

use common::tyrant::{FAIL, OK, Outcome, Tyrant, ext_ok};
use common::{T0, TestServer, test_config};
use reqwest::{Client, Response, StatusCode};
use tidemark::clock::ManualClock;
use tidemark::config::{ServeConfig, TyrantGuard};
use tidemark::tyrant::client::{Reply, Request};

const SECOND: u64 = 1_000_000;

/// A server plus an HTTP client that never goes through a proxy.
struct Both {
    server: TestServer,
    http: Client,
}

impl Both {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        Self::on(TestServer::start_with(tweak).await)
    }

    fn on(server: TestServer) -> Self {
        let http = Client::builder()
            .no_proxy()
            .build()
            .expect("HTTP client builds");
        Self { server, http }
    }

    async fn tyrant(&self) -> Tyrant {
        Tyrant::connect(self.server.tyrant).await
    }

    /// PUT `value` at `/keys/{segment}` with `timestamp` (and a TTL in seconds).
    async fn put(&self, segment: &str, timestamp: u64, value: &[u8], ttl: Option<u64>) -> Response {
        let mut request = self
            .http
            .put(self.server.url(&format!("/keys/{segment}")))
            .header("X-Write-Timestamp", timestamp.to_string())
            .body(value.to_vec());
        if let Some(ttl) = ttl {
            request = request.header("X-TTL", ttl.to_string());
        }
        request.send().await.expect("PUT answered")
    }

    async fn delete(&self, segment: &str, timestamp: u64) -> Response {
        self.http
            .delete(self.server.url(&format!("/keys/{segment}")))
            .header("X-Write-Timestamp", timestamp.to_string())
            .send()
            .await
            .expect("DELETE answered")
    }

    /// The live value and its X-Write-Timestamp, or None on 404.
    async fn get(&self, segment: &str) -> Option<(Vec<u8>, u64)> {
        let response = self
            .http
            .get(self.server.url(&format!("/keys/{segment}")))
            .send()
            .await
            .expect("GET answered");
        if response.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert_eq!(response.status(), StatusCode::OK, "GET /keys/{segment}");
        let timestamp = response
            .headers()
            .get("x-write-timestamp")
            .expect("GET carries X-Write-Timestamp")
            .to_str()
            .expect("ASCII header")
            .parse()
            .expect("decimal timestamp");
        let body = response.bytes().await.expect("body").to_vec();
        Some((body, timestamp))
    }

    async fn stop(self) {
        self.server.stop().await;
    }
}

/// A value whose first 16 bytes are `timestamp` in decimal µs.
fn stamped(timestamp: u64, rest: &str) -> Vec<u8> {
    format!("{timestamp:016}{rest}").into_bytes()
}

/// `ext tsput`/`tsout` success carries the timestamp in µs as decimal text.
fn applied(timestamp: u64) -> Reply {
    ext_ok(&timestamp.to_string())
}

/// Every byte value once, so nothing can be lost to text handling.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

// ---- one store behind both ports ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_key_written_over_http_reads_over_tyrant_byte_identically() {
    let both = Both::start().await;
    let value = all_bytes();
    let response = both.put("a%00b%FF", T0, &value, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let mut tyrant = both.tyrant().await;
    assert_eq!(tyrant.get(b"a\0b\xff").await, Some(value.clone()));
    assert_eq!(
        tyrant
            .call(Request::Vsiz {
                key: b"a\0b\xff".to_vec()
            })
            .await,
        Reply::U32(256)
    );
    // The percent-encoded text is not the key; the decoded bytes are.
    assert_eq!(tyrant.get(b"a%00b%FF").await, None);
    assert_eq!(
        tyrant
            .call(Request::Mget {
                keys: vec![b"a\0b\xff".to_vec(), b"missing".to_vec()]
            })
            .await,
        Reply::KvList(vec![(b"a\0b\xff".to_vec(), value)])
    );
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_key_written_over_tyrant_reads_over_http_byte_identically() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    let value = all_bytes();
    assert_eq!(tyrant.put(b"\0k\xff\x01", &value).await, OK);
    assert_eq!(tyrant.put(b"plain", b"").await, OK);

    let (body, timestamp) = both.get("%00k%FF%01").await.expect("stored");
    assert_eq!(body, value);
    // An unguarded Tyrant write records the server clock.
    assert_eq!(timestamp, T0);
    let (body, _) = both.get("plain").await.expect("empty values are values");
    assert!(body.is_empty());

    // A Tyrant delete is seen over HTTP too.
    assert_eq!(tyrant.out(b"\0k\xff\x01").await, OK);
    assert_eq!(both.get("%00k%FF%01").await, None);
    both.stop().await;
}

// ---- ext tsput / tsout ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsput_newer_stores_the_whole_value_and_answers_its_timestamp() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    let value = [stamped(T0 + 1, "\0session"), vec![0xff, 0x80]].concat();
    assert_eq!(tyrant.ext(b"tsput", b"s", &value).await, applied(T0 + 1));
    assert_eq!(tyrant.get(b"s").await, Some(value.clone()));
    assert_eq!(both.get("s").await, Some((value, T0 + 1)));

    let newer = stamped(T0 + 2, "v2");
    assert_eq!(tyrant.ext(b"tsput", b"s", &newer).await, applied(T0 + 2));
    assert_eq!(both.get("s").await, Some((newer, T0 + 2)));
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsput_stale_or_tie_answers_01_and_changes_nothing() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    let stored = stamped(T0 + 10, "kept");
    assert_eq!(tyrant.ext(b"tsput", b"s", &stored).await, applied(T0 + 10));

    // Older.
    assert_eq!(
        tyrant.ext(b"tsput", b"s", &stamped(T0 + 9, "old")).await,
        FAIL
    );
    // Same timestamp, different value: a tie.
    assert_eq!(
        tyrant.ext(b"tsput", b"s", &stamped(T0 + 10, "other")).await,
        FAIL
    );
    assert_eq!(both.get("s").await, Some((stored.clone(), T0 + 10)));
    // The identical write repeated is idempotent, as over HTTP (204).
    assert_eq!(tyrant.ext(b"tsput", b"s", &stored).await, applied(T0 + 10));
    assert_eq!(both.get("s").await, Some((stored, T0 + 10)));
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsput_reads_the_configured_number_of_digits_and_converts_to_microseconds() {
    // (digits, value prefix, the same instant in µs)
    let cases: [(usize, &str, u64); 4] = [
        (10, "1767225590", T0 - 10 * SECOND),
        (13, "1767225590123", T0 - 10 * SECOND + 123_000),
        (16, "1767225590123456", T0 - 10 * SECOND + 123_456),
        (19, "1767225590123456789", T0 - 10 * SECOND + 123_456),
    ];
    for (digits, prefix, micros) in cases {
        let both = Both::start_with(|c| c.tyrant_ts_digits = digits).await;
        let mut tyrant = both.tyrant().await;
        let value = format!("{prefix}{{\"user\":1}}").into_bytes();
        assert_eq!(
            tyrant.ext(b"tsput", b"k", &value).await,
            applied(micros),
            "{digits} digits"
        );
        assert_eq!(
            both.get("k").await,
            Some((value, micros)),
            "{digits} digits"
        );
        // The same instant over HTTP is a repeat of a different value: a tie.
        assert_eq!(
            both.put("k", micros, b"x", None).await.status(),
            StatusCode::CONFLICT
        );
        both.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsput_without_enough_leading_digits_is_refused() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    for value in [
        &b""[..],
        b"176722560000000",     // 15 digits
        b"176722560000000x0",   // a non-digit inside the prefix
        b" 1767225600000000",   // leading space
        b"-1767225600000000",   // sign
        b"session-without-ts!", // no digits at all
    ] {
        assert_eq!(
            tyrant.ext(b"tsput", b"k", value).await,
            FAIL,
            "{:?}",
            String::from_utf8_lossy(value)
        );
    }
    assert_eq!(both.get("k").await, None);
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tsput_guard_each_other_with_one_timestamp() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;

    // tsput first: an older HTTP PUT is refused, a newer one applies.
    let value = stamped(T0 + 5, "tyrant");
    assert_eq!(tyrant.ext(b"tsput", b"k", &value).await, applied(T0 + 5));
    assert_eq!(
        both.put("k", T0 + 4, b"http-old", None).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(both.get("k").await, Some((value, T0 + 5)));
    assert_eq!(
        both.put("k", T0 + 6, b"http-new", None).await.status(),
        StatusCode::NO_CONTENT
    );

    // HTTP first: an older tsput answers 01, a newer one applies.
    assert_eq!(
        tyrant.ext(b"tsput", b"k", &stamped(T0 + 5, "late")).await,
        FAIL
    );
    assert_eq!(tyrant.get(b"k").await, Some(b"http-new".to_vec()));
    let newest = stamped(T0 + 7, "tyrant-again");
    assert_eq!(tyrant.ext(b"tsput", b"k", &newest).await, applied(T0 + 7));
    assert_eq!(both.get("k").await, Some((newest, T0 + 7)));
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsput_and_tsout_further_ahead_than_the_max_future_skew_answer_01() {
    // The default skew limit is 60 s ahead of the server clock, as over HTTP (422).
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    let too_far = T0 + 61 * SECOND;
    assert_eq!(
        tyrant.ext(b"tsput", b"k", &stamped(too_far, "v")).await,
        FAIL
    );
    assert_eq!(
        tyrant
            .ext(b"tsout", b"k", too_far.to_string().as_bytes())
            .await,
        FAIL
    );
    assert_eq!(both.get("k").await, None);
    let in_reach = T0 + 60 * SECOND;
    assert_eq!(
        tyrant.ext(b"tsput", b"k", &stamped(in_reach, "v")).await,
        applied(in_reach)
    );
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsout_is_a_guarded_delete_both_ports_respect() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    assert_eq!(
        both.put("k", T0 + 5, b"v", None).await.status(),
        StatusCode::CREATED
    );

    // Older than the value: refused, the value survives.
    assert_eq!(
        tyrant
            .ext(b"tsout", b"k", format!("{}", T0 + 4).as_bytes())
            .await,
        FAIL
    );
    assert_eq!(both.get("k").await, Some((b"v".to_vec(), T0 + 5)));
    // Without timestamp digits: refused.
    assert_eq!(tyrant.ext(b"tsout", b"k", b"now").await, FAIL);

    // Newer: deleted on both ports.
    let at = (T0 + 6).to_string();
    assert_eq!(
        tyrant.ext(b"tsout", b"k", at.as_bytes()).await,
        applied(T0 + 6)
    );
    assert_eq!(tyrant.get(b"k").await, None);
    assert_eq!(both.get("k").await, None);

    // The tombstone guards: older writes on either port are refused.
    assert_eq!(
        both.put("k", T0 + 5, b"resurrect", None).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        tyrant.ext(b"tsput", b"k", &stamped(T0 + 5, "x")).await,
        FAIL
    );
    assert_eq!(
        both.put("k", T0 + 7, b"back", None).await.status(),
        StatusCode::CREATED
    );

    // An HTTP DELETE is refused by, and guards against, tsout the same way.
    assert_eq!(
        both.delete("k", T0 + 8).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tyrant
            .ext(b"tsout", b"k", format!("{}", T0 + 7).as_bytes())
            .await,
        FAIL
    );
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ext_names_answer_01_and_write_nothing() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    let value = stamped(T0, "v");
    for name in [&b"echo"[..], b"", b"TSPUT", b"tsput ", b"_tsput", b"put"] {
        assert_eq!(
            tyrant.ext(name, b"k", &value).await,
            FAIL,
            "{:?}",
            String::from_utf8_lossy(name)
        );
    }
    assert_eq!(tyrant.get(b"k").await, None);
    both.stop().await;
}

// ---- plain writes: --tyrant-guard prefix and the unguarded default ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_guard_applies_the_timestamp_rule_to_put_putkeep_and_putnr() {
    let both = Both::start_with(|c| c.tyrant_guard = TyrantGuard::Prefix).await;
    let mut tyrant = both.tyrant().await;

    let v10 = stamped(T0 + 10, "ten");
    assert_eq!(tyrant.put(b"k", &v10).await, OK);
    assert_eq!(both.get("k").await, Some((v10.clone(), T0 + 10)));
    // put: older, tie, and no digits are refused.
    assert_eq!(tyrant.put(b"k", &stamped(T0 + 9, "nine")).await, FAIL);
    assert_eq!(tyrant.put(b"k", &stamped(T0 + 10, "tie")).await, FAIL);
    assert_eq!(tyrant.put(b"k", b"no timestamp here").await, FAIL);
    assert_eq!(tyrant.put(b"fresh", b"no timestamp here").await, FAIL);
    assert_eq!(tyrant.get(b"fresh").await, None);

    // putnr: silent either way; only the newer one lands.
    tyrant.putnr(b"k", &stamped(T0 + 8, "stale-nr")).await;
    assert_eq!(tyrant.get(b"k").await, Some(v10));
    let v11 = stamped(T0 + 11, "eleven");
    tyrant.putnr(b"k", &v11).await;
    assert_eq!(tyrant.get(b"k").await, Some(v11.clone()));
    tyrant.putnr(b"nodigits", b"value").await;
    assert_eq!(tyrant.get(b"nodigits").await, None);

    // putkeep: refused on a live key whatever its timestamp; on a new key it needs
    // the digits too.
    assert_eq!(tyrant.putkeep(b"k", &stamped(T0 + 20, "keep")).await, FAIL);
    assert_eq!(tyrant.putkeep(b"new", b"no digits").await, FAIL);
    let kept = stamped(T0 + 3, "kept");
    assert_eq!(tyrant.putkeep(b"new", &kept).await, OK);
    assert_eq!(both.get("new").await, Some((kept, T0 + 3)));

    // HTTP is guarded against the prefix timestamp, and guards it in turn.
    assert_eq!(
        both.put("k", T0 + 11, b"http", None).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        both.put("k", T0 + 12, b"http", None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tyrant.put(b"k", &stamped(T0 + 12, "late")).await, FAIL);
    assert_eq!(both.get("k").await, Some((b"http".to_vec(), T0 + 12)));

    // A tombstone guards putkeep as well.
    assert_eq!(
        both.delete("new", T0 + 30).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tyrant.putkeep(b"new", &stamped(T0 + 29, "old")).await, FAIL);
    assert_eq!(tyrant.putkeep(b"new", &stamped(T0 + 31, "new")).await, OK);
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unguarded_plain_writes_ignore_timestamps_and_keep_tyrant_semantics() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    // No digits needed, and an "older" prefix still overwrites: it is just a value.
    assert_eq!(tyrant.put(b"k", b"no digits").await, OK);
    assert_eq!(tyrant.put(b"k", &stamped(T0 - 100 * SECOND, "x")).await, OK);
    assert_eq!(
        tyrant.get(b"k").await,
        Some(stamped(T0 - 100 * SECOND, "x"))
    );
    assert_eq!(tyrant.putkeep(b"k", b"again").await, FAIL);
    assert_eq!(tyrant.putkeep(b"other", b"first").await, OK);
    tyrant.putnr(b"nr", b"silent").await;
    assert_eq!(tyrant.get(b"nr").await, Some(b"silent".to_vec()));
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unguarded_plain_writes_stamp_the_server_clock_which_guards_both_ports() {
    let both = Both::start().await;
    let clock = both.server.clock.clone();
    let mut tyrant = both.tyrant().await;

    // put, putkeep and putnr all record the server clock.
    assert_eq!(tyrant.put(b"via-tyrant", b"plain").await, OK);
    assert_eq!(tyrant.putkeep(b"via-http", b"plain").await, OK);
    tyrant.putnr(b"via-nr", b"plain").await;
    // putnr has no reply; a request behind it on the same connection sees it done.
    assert_eq!(tyrant.get(b"via-nr").await, Some(b"plain".to_vec()));
    for segment in ["via-tyrant", "via-http", "via-nr"] {
        assert_eq!(
            both.get(segment).await,
            Some((b"plain".to_vec(), T0)),
            "{segment}"
        );
    }

    // Tyrant side: a guarded write older than server-now is refused, a newer applies.
    assert_eq!(
        tyrant
            .ext(b"tsput", b"via-tyrant", &stamped(T0 - 1, "old"))
            .await,
        FAIL
    );
    assert_eq!(tyrant.get(b"via-tyrant").await, Some(b"plain".to_vec()));
    assert_eq!(
        tyrant
            .ext(b"tsput", b"via-tyrant", &stamped(T0 + 1, "new"))
            .await,
        applied(T0 + 1)
    );
    assert_eq!(
        tyrant
            .ext(b"tsout", b"via-nr", (T0 - 1).to_string().as_bytes())
            .await,
        FAIL
    );

    // HTTP side: the same.
    assert_eq!(
        both.put("via-http", T0 - 1, b"old", None).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(both.get("via-http").await, Some((b"plain".to_vec(), T0)));
    assert_eq!(
        both.delete("via-http", T0 - 1).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        both.put("via-http", T0 + 1, b"new", None).await.status(),
        StatusCode::NO_CONTENT
    );

    // The stamp is max(now, stored + 1): a plain write over a guarded write from the
    // (allowed) future still moves the key forward.
    let future = T0 + 30 * SECOND;
    assert_eq!(
        tyrant
            .ext(b"tsput", b"via-tyrant", &stamped(future, "future"))
            .await,
        applied(future)
    );
    assert_eq!(tyrant.put(b"via-tyrant", b"plain again").await, OK);
    assert_eq!(
        both.get("via-tyrant").await,
        Some((b"plain again".to_vec(), future + 1))
    );
    assert_eq!(
        both.put("via-tyrant", future, b"x", None).await.status(),
        StatusCode::CONFLICT
    );

    // When the clock moves on, so does the stamp.
    clock.advance(90 * SECOND);
    assert_eq!(tyrant.put(b"via-http", b"later").await, OK);
    assert_eq!(
        both.get("via-http").await,
        Some((b"later".to_vec(), T0 + 90 * SECOND))
    );
    both.stop().await;
}

// ---- iteration and rnum ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_iterate_at_once_without_disturbing_each_other() {
    let both = Both::start().await;
    let mut writer = both.tyrant().await;
    let keys: BTreeSet<Vec<u8>> = (0..20).map(|i| format!("key{i:02}").into_bytes()).collect();
    for key in &keys {
        assert_eq!(writer.put(key, b"v").await, OK);
    }

    let mut a = both.tyrant().await;
    let mut b = both.tyrant().await;
    // Before iterinit there is nothing to iterate.
    assert_eq!(a.call(Request::IterNext).await, FAIL);
    assert_eq!(a.call(Request::IterInit).await, OK);
    assert_eq!(b.call(Request::IterInit).await, OK);
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    // Interleave: a takes two steps for each of b's, and b restarts halfway.
    for step in 0..60 {
        if let Reply::Blob(key) = a.call(Request::IterNext).await {
            seen_a.push(key);
        }
        if step % 2 == 0 {
            if step == 20 {
                assert_eq!(b.call(Request::IterInit).await, OK);
                seen_b.clear();
            }
            if let Reply::Blob(key) = b.call(Request::IterNext).await {
                seen_b.push(key);
            }
        }
    }
    for (name, seen) in [("a", &seen_a), ("b", &seen_b)] {
        assert_eq!(seen.len(), keys.len(), "{name} saw every key exactly once");
        let set: BTreeSet<Vec<u8>> = seen.iter().cloned().collect();
        assert_eq!(set, keys, "{name}");
    }
    // Finished iterations keep answering 01 until the next iterinit.
    assert_eq!(a.call(Request::IterNext).await, FAIL);
    assert_eq!(a.call(Request::IterNext).await, FAIL);
    // fwmkeys does not move the iterator.
    assert_eq!(a.call(Request::IterInit).await, OK);
    let first = a.call(Request::IterNext).await;
    let Reply::List(prefixed) = a
        .call(Request::Fwmkeys {
            prefix: b"key1".to_vec(),
            max: -1,
        })
        .await
    else {
        panic!("fwmkeys answers a list");
    };
    assert_eq!(prefixed.len(), 10);
    let second = a.call(Request::IterNext).await;
    assert_ne!(first, second);
    assert!(matches!(second, Reply::Blob(_)));
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_iteration_and_rnum_cover_exactly_the_live_keys() {
    let both =
        Both::start_with(|c| c.sweep_interval = std::time::Duration::from_secs(86_400)).await;
    let mut tyrant = both.tyrant().await;

    let mut live = BTreeSet::new();
    for i in 0..10 {
        let segment = format!("live{i}");
        assert_eq!(
            both.put(&segment, T0, b"v", None).await.status(),
            StatusCode::CREATED
        );
        live.insert(segment.into_bytes());
    }
    assert_eq!(tyrant.put(b"\0bin\xff", b"v").await, OK);
    live.insert(b"\0bin\xff".to_vec());
    // Deleted over HTTP, over tsout and over out: tombstones, not records.
    for i in 0..3 {
        let segment = format!("gone{i}");
        assert_eq!(
            both.put(&segment, T0, b"v", None).await.status(),
            StatusCode::CREATED
        );
    }
    assert_eq!(
        both.delete("gone0", T0 + 1).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tyrant
            .ext(b"tsout", b"gone1", (T0 + 1).to_string().as_bytes())
            .await,
        applied(T0 + 1)
    );
    assert_eq!(tyrant.out(b"gone2").await, OK);
    // A delete of a key that never existed leaves a tombstone too.
    assert_eq!(
        both.delete("never", T0).await.status(),
        StatusCode::NO_CONTENT
    );
    // Expiring values: live for now.
    for i in 0..4 {
        assert_eq!(
            both.put(&format!("ttl{i}"), T0, b"v", Some(10))
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    // One expiring value is overwritten without a TTL: it stays live.
    assert_eq!(
        both.put("ttl3", T0 + 1, b"kept", None).await.status(),
        StatusCode::NO_CONTENT
    );
    live.insert(b"ttl3".to_vec());

    let with_ttl: BTreeSet<Vec<u8>> = (0..3).map(|i| format!("ttl{i}").into_bytes()).collect();
    let mut before_expiry = live.clone();
    before_expiry.extend(with_ttl.iter().cloned());
    assert_eq!(tyrant.rnum().await, before_expiry.len() as u64);
    let keys: BTreeSet<Vec<u8>> = tyrant.all_keys(100).await.into_iter().collect();
    assert_eq!(keys, before_expiry);

    // Past the TTL (the sweeper is not running): expired values vanish from both.
    both.server.clock.advance(10 * SECOND);
    assert_eq!(tyrant.rnum().await, live.len() as u64);
    let pass = tyrant.all_keys(100).await;
    assert_eq!(pass.len(), live.len(), "no key twice");
    assert_eq!(pass.into_iter().collect::<BTreeSet<_>>(), live);

    // An expired key written again is live again and counted once.
    assert_eq!(
        both.put("ttl0", T0 + 2, b"back", None).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(tyrant.rnum().await, live.len() as u64 + 1);
    // vanish empties the store and unsets the iterator.
    assert_eq!(tyrant.call(Request::Vanish).await, OK);
    assert_eq!(tyrant.rnum().await, 0);
    assert_eq!(tyrant.call(Request::IterNext).await, FAIL);
    assert!(tyrant.all_keys(10).await.is_empty());
    both.stop().await;
}

// ---- stat ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_reports_the_reference_keys_with_sensible_values() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    for i in 0..3 {
        assert_eq!(tyrant.put(format!("k{i}").as_bytes(), b"v").await, OK);
    }
    assert_eq!(tyrant.get(b"missing").await, None);
    assert_eq!(tyrant.out(b"missing").await, FAIL);
    let rnum = tyrant.rnum().await;
    let size = tyrant.size().await;
    let lines = tyrant.stat().await;
    let value = |name: &str| -> &str {
        lines
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("stat has no {name} line: {lines:?}"))
    };
    let number = |name: &str| -> f64 {
        value(name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {}", value(name)))
    };

    // The reference's keys, in the reference's order.
    let reference = [
        "version", "libver", "protver", "os", "time", "pid", "sid", "type", "path", "rnum", "size",
        "bigend", "fd", "loadavg", "memsize", "memrss", "ru_user", "ru_sys", "ru_real",
    ];
    let counters = [
        "put",
        "putkeep",
        "putcat",
        "putshl",
        "putnr",
        "out",
        "get",
        "mget",
        "vsiz",
        "iterinit",
        "iternext",
        "fwmkeys",
        "addint",
        "adddouble",
        "ext",
        "sync",
        "optimize",
        "vanish",
        "copy",
        "restore",
        "setmst",
        "rnum",
        "size",
        "stat",
        "misc",
        "repl",
    ]
    .map(|c| format!("cnt_{c}"));
    let misses = ["cnt_put_miss", "cnt_out_miss", "cnt_get_miss"];
    let expected: Vec<&str> = reference
        .iter()
        .copied()
        .chain(counters.iter().map(String::as_str))
        .chain(misses)
        .collect();
    let names: Vec<&str> = lines.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        &names[..expected.len()],
        &expected[..],
        "reference keys in order"
    );
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "no key twice");

    assert_eq!(value("version"), "1.1.41");
    assert_eq!(value("libver"), "324");
    assert_eq!(value("protver"), "0.91");
    assert_eq!(
        value("os"),
        if cfg!(target_os = "linux") {
            "Linux"
        } else {
            value("os")
        }
    );
    // The server's clock, in seconds with six decimals.
    assert_eq!(value("time"), format!("{}.000000", T0 / SECOND));
    assert_eq!(value("pid"), std::process::id().to_string());
    assert_eq!(value("sid"), "0");
    assert_eq!(value("type"), "hash");
    // Where the data lives: the database file, or the shared database (never with
    // credentials).
    let path = value("path");
    let names_the_store = match common::engine() {
        common::Engine::Redb => path.ends_with("tidemark.redb"),
        // host:port/database of the test's own database.
        common::Engine::Postgres => path.starts_with("127.0.0.1:") && path.contains("/t_"),
    };
    assert!(names_the_store, "path: {path}");
    assert_eq!(value("rnum"), "3");
    assert_eq!(rnum, 3);
    assert_eq!(value("size"), size.to_string());
    assert!(size > 0);
    assert_eq!(
        value("bigend"),
        u8::from(cfg!(target_endian = "big")).to_string()
    );
    assert!(number("fd") >= 3.0, "fd {}", value("fd"));
    assert!(number("loadavg") >= 0.0);
    assert!(number("memsize") >= number("memrss"));
    assert!(number("memrss") > 0.0);
    assert!(number("ru_user") >= 0.0 && number("ru_sys") >= 0.0);
    assert!(number("ru_real") >= 0.0);
    for name in ["time", "loadavg", "ru_user", "ru_sys", "ru_real"] {
        let decimals = value(name).split_once('.').map(|(_, d)| d.len());
        assert_eq!(decimals, Some(6), "{name} is %.6f: {}", value(name));
    }
    // Counters of this server: three puts, two gets, one out, one rnum, one size, and
    // the stat itself.
    assert_eq!(value("cnt_put"), "3");
    assert_eq!(value("cnt_get"), "1");
    assert_eq!(value("cnt_out"), "1");
    assert_eq!(value("cnt_rnum"), "1");
    assert_eq!(value("cnt_size"), "1");
    assert_eq!(value("cnt_stat"), "1");
    assert_eq!(value("cnt_put_miss"), "0");
    assert_eq!(value("cnt_get_miss"), "1");
    assert_eq!(value("cnt_out_miss"), "1");
    assert_eq!(value("cnt_mget"), "0");

    // Each connection reports its own descriptor.
    let mut other = both.tyrant().await;
    let other_lines = other.stat().await;
    let other_fd = other_lines
        .iter()
        .find(|(n, _)| n == "fd")
        .map(|(_, v)| v.clone());
    assert_ne!(other_fd.as_deref(), Some(value("fd")));
    both.stop().await;
}

// ---- copy ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_an_at_path_fails_and_runs_nothing() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    let scratch = tempfile::tempdir().expect("temp dir");
    let marker = scratch.path().join("ran");
    for command in [
        format!("@touch {}", marker.display()),
        format!("@/bin/sh -c 'touch {}'", marker.display()),
        "@".to_string(),
    ] {
        assert_eq!(
            tyrant
                .call(Request::Copy {
                    path: command.clone().into_bytes()
                })
                .await,
            FAIL,
            "{command}"
        );
    }
    assert!(!marker.exists(), "a shell command ran");
    assert_eq!(
        std::fs::read_dir(scratch.path()).expect("list").count(),
        0,
        "nothing was written"
    );
    // The connection is fine afterwards.
    assert_eq!(tyrant.put(b"k", b"v").await, OK);
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_writes_a_snapshot_a_new_server_restores_with_timestamps() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    if common::engine() == common::Engine::Postgres {
        return copy_fails_and_writes_nothing_on_a_shared_database(both, tyrant).await;
    }
    assert_eq!(
        both.put("http", T0 + 3, b"from http", None).await.status(),
        StatusCode::CREATED
    );
    let binary = all_bytes();
    assert_eq!(
        tyrant
            .ext(
                b"tsput",
                b"\0bin\xff",
                &[stamped(T0 + 4, ""), binary.clone()].concat()
            )
            .await,
        applied(T0 + 4)
    );
    assert_eq!(tyrant.put(b"plain", b"tyrant").await, OK);
    assert_eq!(
        both.delete("deleted", T0 + 9).await.status(),
        StatusCode::NO_CONTENT
    );

    let backup_dir = tempfile::tempdir().expect("temp dir");
    let backup = backup_dir.path().join("backup.redb");
    assert_eq!(
        tyrant
            .call(Request::Copy {
                path: backup.to_str().expect("UTF-8 path").as_bytes().to_vec()
            })
            .await,
        OK
    );
    // Writes after the copy are not in it.
    assert_eq!(tyrant.put(b"after", b"late").await, OK);
    // Copying over an existing file replaces it, as ttserver does.
    let second = backup_dir.path().join("second.redb");
    std::fs::write(&second, b"old junk").expect("write");
    assert_eq!(
        tyrant
            .call(Request::Copy {
                path: second.to_str().expect("UTF-8 path").as_bytes().to_vec()
            })
            .await,
        OK
    );
    assert!(std::fs::metadata(&second).expect("copied").len() > 8);
    both.stop().await;

    // Restore: a data directory holding only the copy, under the store's file name.
    let restored_dir = tempfile::tempdir().expect("temp dir");
    std::fs::rename(
        &backup,
        restored_dir.path().join(tidemark::store::DB_FILE_NAME),
    )
    .expect("move the copy into place");
    let config = test_config(restored_dir.path());
    let restored =
        Both::on(TestServer::start_in(config, Some(restored_dir), ManualClock::new(T0)).await);
    assert_eq!(
        restored.get("http").await,
        Some((b"from http".to_vec(), T0 + 3))
    );
    assert_eq!(
        restored.get("%00bin%FF").await,
        Some(([stamped(T0 + 4, ""), binary].concat(), T0 + 4))
    );
    assert_eq!(restored.get("plain").await, Some((b"tyrant".to_vec(), T0)));
    assert_eq!(restored.get("after").await, None);
    // The tombstone came along and still guards.
    assert_eq!(restored.get("deleted").await, None);
    assert_eq!(
        restored.put("deleted", T0 + 8, b"x", None).await.status(),
        StatusCode::CONFLICT
    );
    // Guards hold against the restored timestamps.
    assert_eq!(
        restored.put("http", T0 + 2, b"x", None).await.status(),
        StatusCode::CONFLICT
    );
    let mut tyrant = restored.tyrant().await;
    assert_eq!(tyrant.rnum().await, 3);
    restored.stop().await;
}

/// On the PostgreSQL engine there is no database file: `copy` answers the failure
/// status, creates nothing, and the store is untouched.
async fn copy_fails_and_writes_nothing_on_a_shared_database(both: Both, mut tyrant: Tyrant) {
    assert_eq!(tyrant.put(b"k", b"v").await, OK);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("copy.redb");
    assert_eq!(
        tyrant
            .call(Request::Copy {
                path: target.to_str().expect("UTF-8 path").as_bytes().to_vec()
            })
            .await,
        FAIL
    );
    assert!(!target.exists(), "a failed copy leaves no file behind");
    assert_eq!(tyrant.rnum().await, 1);
    both.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_onto_the_live_database_file_is_refused() {
    let both = Both::start().await;
    let mut tyrant = both.tyrant().await;
    if common::engine() == common::Engine::Postgres {
        return copy_fails_and_writes_nothing_on_a_shared_database(both, tyrant).await;
    }
    assert_eq!(tyrant.put(b"k", b"v").await, OK);
    // Counting checkpoints the write into the database file, so the file is settled.
    assert_eq!(tyrant.rnum().await, 1);
    let live = both.server.data_dir().join(tidemark::store::DB_FILE_NAME);
    let before = std::fs::read(&live).expect("read the database file");
    // The same file under other names: a detour through the directory, a symlink and
    // a hard link.
    let links = tempfile::tempdir().expect("temp dir");
    let symlink = links.path().join("symlink.redb");
    std::os::unix::fs::symlink(&live, &symlink).expect("symlink");
    let hard_link = both.server.data_dir().join("hard-link.redb");
    std::fs::hard_link(&live, &hard_link).expect("hard link");
    let spelled = [
        live.clone(),
        both.server
            .data_dir()
            .join(".")
            .join(tidemark::store::DB_FILE_NAME),
        symlink,
        hard_link.clone(),
    ];
    for path in spelled {
        assert_eq!(
            tyrant
                .call(Request::Copy {
                    path: path.to_str().expect("UTF-8").as_bytes().to_vec()
                })
                .await,
            FAIL,
            "{}",
            path.display()
        );
    }
    assert_eq!(std::fs::read(&live).expect("read"), before);
    std::fs::remove_file(&hard_link).expect("unlink");
    assert_eq!(tyrant.get(b"k").await, Some(b"v".to_vec()));
    assert_eq!(tyrant.put(b"k2", b"v2").await, OK);
    drop(tyrant);
    // The file still opens and holds everything.
    let reopened = both.server.restart().await;
    let mut tyrant = Tyrant::connect(reopened.tyrant).await;
    assert_eq!(tyrant.get(b"k").await, Some(b"v".to_vec()));
    assert_eq!(tyrant.get(b"k2").await, Some(b"v2".to_vec()));
    reopened.stop().await;
}

// ---- --tyrant-deny ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_commands_answer_the_way_ttserver_answers_masked_ones() {
    let both = Both::start_with(|c| {
        c.tyrant_deny = "put,get,mget,stat,misc,rnum"
            .split(',')
            .map(String::from)
            .collect();
    })
    .await;
    assert_eq!(
        both.put("k", T0, b"from http", None).await.status(),
        StatusCode::CREATED
    );
    let mut tyrant = both.tyrant().await;

    // put: 01, nothing written.
    assert_eq!(tyrant.put(b"new", b"v").await, FAIL);
    assert_eq!(both.get("new").await, None);
    // get: 01 even for a live key.
    assert_eq!(tyrant.get(b"k").await, None);
    // mget: 00 00000000.
    tyrant
        .send(&Request::Mget {
            keys: vec![b"k".to_vec()],
        })
        .await;
    assert_eq!(raw_reply(&mut tyrant, 5).await, [0, 0, 0, 0, 0]);
    // misc: 00 00000000, and a denied misc put writes nothing.
    for (name, args) in [
        ("get", vec![b"k".to_vec()]),
        ("put", vec![b"m".to_vec(), b"v".to_vec()]),
        ("nosuchfunction", vec![]),
    ] {
        tyrant
            .send(&Request::Misc {
                name: name.as_bytes().to_vec(),
                opts: 0,
                args,
            })
            .await;
        assert_eq!(raw_reply(&mut tyrant, 5).await, [0, 0, 0, 0, 0], "{name}");
    }
    assert_eq!(both.get("m").await, None);
    // rnum: 00 and a u64 zero although a record exists.
    tyrant.send(&Request::Rnum).await;
    assert_eq!(raw_reply(&mut tyrant, 9).await, [0; 9]);
    // stat: only the cnt_* lines.
    let lines = tyrant.stat().await;
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|(name, _)| name.starts_with("cnt_")),
        "{lines:?}"
    );
    // Counters still count denied requests.
    let count = |name: &str| {
        lines
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(count("cnt_put").as_deref(), Some("1"));
    assert_eq!(count("cnt_misc").as_deref(), Some("3"));

    // Commands not denied work as usual, on the same connection.
    assert_eq!(
        tyrant.call(Request::Vsiz { key: b"k".to_vec() }).await,
        Reply::U32(9)
    );
    assert_eq!(tyrant.putkeep(b"kept", b"v").await, OK);
    assert!(tyrant.size().await > 0);
    assert_eq!(both.get("kept").await, Some((b"v".to_vec(), T0)));
    assert_eq!(
        tyrant
            .outcome_within(std::time::Duration::from_millis(50))
            .await,
        Outcome::Open
    );
    both.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_putnr_is_silent_size_is_zero_and_denied_repl_closes() {
    let both = Both::start_with(|c| {
        c.tyrant_deny = vec![
            "putnr".into(),
            "size".into(),
            "fwmkeys".into(),
            "repl".into(),
            "ext".into(),
        ];
    })
    .await;
    let mut tyrant = both.tyrant().await;
    tyrant.putnr(b"nr", b"v").await;
    assert_eq!(tyrant.get(b"nr").await, None);
    tyrant.send(&Request::Size).await;
    assert_eq!(raw_reply(&mut tyrant, 9).await, [0; 9]);
    tyrant
        .send(&Request::Fwmkeys {
            prefix: Vec::new(),
            max: -1,
        })
        .await;
    assert_eq!(raw_reply(&mut tyrant, 5).await, [0, 0, 0, 0, 0]);
    // A denied tsput is refused like any masked ext.
    assert_eq!(tyrant.ext(b"tsput", b"k", &stamped(T0, "v")).await, FAIL);
    assert_eq!(both.get("k").await, None);
    tyrant
        .send(&Request::Repl {
            timestamp: 1,
            server_id: 1,
        })
        .await;
    assert_eq!(
        tyrant
            .outcome_within(std::time::Duration::from_secs(3))
            .await,
        Outcome::Closed,
        "masked repl closes without sending anything"
    );
    both.stop().await;
}

/// Exactly `n` reply bytes, and nothing more within a short wait.
async fn raw_reply(tyrant: &mut Tyrant, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    for _ in 0..n {
        match tyrant.outcome_within(common::tyrant::REPLY_WAIT).await {
            Outcome::Sent(bytes) => got.extend(bytes),
            other => panic!("expected {n} reply bytes, got {got:?} then {other:?}"),
        }
        if got.len() >= n {
            break;
        }
    }
    assert_eq!(got.len(), n, "reply length: {got:?}");
    got
}
