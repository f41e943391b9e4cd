//! `tidemark migrate --from tyrant://HOST:PORT`, through the real binary over loopback:
//! a tidemark server's Tyrant port stands in for the ttserver being moved off, seeded
//! with `put`, `ext tsput` and the 2009 extension's `timestamp.<key>` records; the copy
//! lands in a second server (through /admin/import) or offline in a data directory or
//! a shared database. Each `--timestamps` mode gives every record the documented
//! timestamp, and a second run is refused by the guard where tidemark is as new.

mod common;

use std::process::{ExitStatus, Stdio};

use common::http::{Http, header};
use common::process::{Process, now_micros};
use common::tyrant::{OK, Tyrant};
use common::{T0, TestServer};
use serde_json::Value;
use tidemark::config::Secret;
use tidemark::tyrant::client::Reply;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");
const TOKEN: &str = "migrate-s3cret";

struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn summary(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a summary ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }
}

/// Run the binary with a clean environment (no TIDEMARK_* from the host).
async fn tidemark(args: &[&str]) -> Run {
    let output = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .await
        .expect("tidemark runs");
    Run {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn from(source: &TestServer) -> String {
    format!("tyrant://{}", source.tyrant)
}

/// `migrate --from source` into the running `target`, with `extra` flags.
async fn migrate_into(source: &TestServer, target: &TestServer, extra: &[&str]) -> Run {
    let (from, server) = (from(source), target.url(""));
    let mut args = vec!["migrate", "--from", &from, "--server", &server];
    args.extend_from_slice(extra);
    tidemark(&args).await
}

/// The summary's counts, in a fixed order, for one-line comparisons.
fn counts(summary: &Value) -> [u64; 8] {
    [
        "read",
        "copied",
        "repeated",
        "stale",
        "tie",
        "no_timestamp",
        "timestamp_records",
        "failed",
    ]
    .map(|field| {
        summary[field]
            .as_u64()
            .unwrap_or_else(|| panic!("{field}: {summary}"))
    })
}

/// The value and write timestamp of `key` on `server`, or None when it is absent.
async fn stored(http: &Http, key: &str) -> Option<(Vec<u8>, u64)> {
    let (status, headers, body) = http.read(key).await;
    match status {
        200 => Some((
            body,
            header(&headers, "x-write-timestamp")
                .parse()
                .expect("a decimal timestamp"),
        )),
        404 => None,
        other => panic!("GET {key}: {other}"),
    }
}

async fn tsput(tyrant: &mut Tyrant, key: &str, value: &str) {
    assert!(
        matches!(
            tyrant.ext(b"tsput", key.as_bytes(), value.as_bytes()).await,
            Reply::Blob(_)
        ),
        "tsput {key}"
    );
}

#[tokio::test]
async fn now_stamps_every_record_with_the_copy_start_in_batches_and_a_rerun_loses_to_newer_writes()
{
    let source = TestServer::start().await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    // 25 keys in batches of 7: three full batches and a short last one.
    for i in 0..25 {
        let (key, value) = (format!("k{i:02}"), format!("value {i}"));
        assert_eq!(tyrant.put(key.as_bytes(), value.as_bytes()).await, OK);
    }
    let target = TestServer::start().await;
    // The binary stamps with the real clock; the target's clock is set to it.
    target.clock.set(now_micros());
    let before = now_micros();
    let run = migrate_into(&source, &target, &["--batch", "7"]).await;
    let after = now_micros();
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    let summary = run.summary();
    assert_eq!(counts(&summary), [25, 25, 0, 0, 0, 0, 0, 0], "{summary}");
    assert_eq!(summary["timestamps"], "now");
    let started = summary["started_at"].as_u64().expect("started_at");
    assert!((before..=after).contains(&started), "{started}");
    let http = Http::of(&target);
    for i in 0..25 {
        let (value, timestamp) = stored(&http, &format!("k{i:02}")).await.expect("copied");
        assert_eq!(value, format!("value {i}").into_bytes());
        assert_eq!(timestamp, started, "one timestamp for the whole copy");
    }

    // A client writes to tidemark with a timestamp later than the next run's start:
    // the re-run stamps a newer time than the first and replaces the rest, but that
    // write stands.
    target.clock.set(now_micros());
    let newer = now_micros() + 50_000_000;
    assert_eq!(
        http.put("k03", newer, "written in tidemark").await.status(),
        204
    );
    let again = migrate_into(&source, &target, &[]).await;
    assert_eq!(again.code(), Some(0), "{}", again.stderr);
    assert_eq!(
        counts(&again.summary()),
        [25, 24, 0, 1, 0, 0, 0, 0],
        "{}",
        again.stderr
    );
    assert_eq!(
        stored(&http, "k03").await,
        Some((b"written in tidemark".to_vec(), newer))
    );
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn prefix_reads_each_values_leading_digits_and_a_rerun_is_refused_as_already_stored() {
    let source = TestServer::start().await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    let stamp = |i: u64| T0 - 1_000_000 + i * 1000;
    for i in 0..5 {
        tsput(
            &mut tyrant,
            &format!("p{i}"),
            &format!("{:016}|session {i}", stamp(i)),
        )
        .await;
    }
    assert_eq!(tyrant.put(b"plain", b"no digits here").await, OK);
    let target = TestServer::start_with(|c| c.auth.auth_token = Some(Secret(TOKEN.into()))).await;

    // Without the token the target refuses, and says so.
    let refused = migrate_into(&source, &target, &["--timestamps", "prefix"]).await;
    assert_eq!(refused.code(), Some(1));
    assert!(refused.stderr.contains("401"), "{}", refused.stderr);

    let run = migrate_into(
        &source,
        &target,
        &["--timestamps", "prefix", "--token", TOKEN],
    )
    .await;
    // A key without a timestamp is skipped and counted: exit 3.
    assert_eq!(run.code(), Some(3), "{}", run.stderr);
    let summary = run.summary();
    assert_eq!(counts(&summary), [6, 5, 0, 0, 0, 1, 0, 0], "{summary}");
    assert_eq!(summary["errors"][0]["key"], "plain", "{summary}");
    assert!(
        run.stderr.contains("1 without a timestamp"),
        "{}",
        run.stderr
    );
    let http = Http::of(&target).with_token(TOKEN);
    for i in 0..5 {
        let (value, timestamp) = stored(&http, &format!("p{i}")).await.expect("copied");
        assert_eq!(value, format!("{:016}|session {i}", stamp(i)).into_bytes());
        assert_eq!(timestamp, stamp(i));
    }
    assert_eq!(stored(&http, "plain").await, None);

    // Since the copy: tidemark took a newer write of p0, the source a newer one of p1.
    assert_eq!(http.put("p0", T0, "newer in tidemark").await.status(), 204);
    tsput(
        &mut tyrant,
        "p1",
        &format!("{:016}|newer at the source", T0),
    )
    .await;
    let again = migrate_into(
        &source,
        &target,
        &["--timestamps", "prefix", "--token", TOKEN],
    )
    .await;
    assert_eq!(again.code(), Some(3), "{}", again.stderr);
    assert_eq!(
        counts(&again.summary()),
        [6, 1, 3, 1, 0, 1, 0, 0],
        "{}",
        again.stderr
    );
    assert_eq!(
        stored(&http, "p0").await,
        Some((b"newer in tidemark".to_vec(), T0))
    );
    assert_eq!(
        stored(&http, "p1").await,
        Some((format!("{T0:016}|newer at the source").into_bytes(), T0))
    );
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn ext_keys_take_the_timestamp_records_beside_each_key_and_do_not_copy_them() {
    let source = TestServer::start().await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    let seeded: [(&str, &str, u64); 3] = [
        ("alpha", "{\"user\":1}", T0 - 3000),
        ("beta", "b", T0 - 2000),
        ("zeta", "z", T0 - 1000),
    ];
    for (key, value, timestamp) in seeded {
        assert_eq!(tyrant.put(key.as_bytes(), value.as_bytes()).await, OK);
        let record = format!("timestamp.{key}");
        assert_eq!(
            tyrant
                .put(record.as_bytes(), timestamp.to_string().as_bytes())
                .await,
            OK
        );
    }
    // A key the extension never stamped, and a stamp whose key is gone.
    assert_eq!(tyrant.put(b"orphan", b"no stamp").await, OK);
    assert_eq!(
        tyrant
            .put(b"timestamp.ghost", T0.to_string().as_bytes())
            .await,
        OK
    );
    let target = TestServer::start().await;

    // Batches of 2 put most keys and their stamps in different batches.
    let args = ["--timestamps", "ext-keys", "--batch", "2"];
    let run = migrate_into(&source, &target, &args).await;
    assert_eq!(run.code(), Some(3), "{}", run.stderr);
    let summary = run.summary();
    assert_eq!(counts(&summary), [8, 3, 0, 0, 0, 1, 4, 0], "{summary}");
    assert_eq!(summary["errors"][0]["key"], "orphan", "{summary}");
    let http = Http::of(&target);
    for (key, value, timestamp) in seeded {
        assert_eq!(
            stored(&http, key).await,
            Some((value.as_bytes().to_vec(), timestamp))
        );
        assert_eq!(stored(&http, &format!("timestamp.{key}")).await, None);
    }
    assert_eq!(stored(&http, "orphan").await, None);
    assert_eq!(stored(&http, "timestamp.ghost").await, None);

    let again = migrate_into(&source, &target, &args).await;
    assert_eq!(
        counts(&again.summary()),
        [8, 0, 3, 0, 0, 1, 4, 0],
        "{}",
        again.stderr
    );
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn offline_into_a_stopped_servers_data_dir_with_second_timestamps() {
    // A source whose clients stamp values in seconds.
    let source = TestServer::start_with(|c| c.tyrant_ts_digits = 10).await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    let seconds = T0 / 1_000_000;
    for i in 0..3 {
        tsput(
            &mut tyrant,
            &format!("s{i}"),
            &format!("{}:v{i}", seconds - i),
        )
        .await;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().expect("UTF-8 path");
    let from = from(&source);
    let args = [
        "migrate",
        "--from",
        &from,
        "--timestamps",
        "prefix",
        "--tyrant-ts-digits",
        "10",
        "--data-dir",
        data,
    ];
    let run = tidemark(&args).await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(counts(&run.summary()), [3, 3, 0, 0, 0, 0, 0, 0]);

    let server = Process::serve(["--data-dir", data], &[]);
    let http = Http::new(server.url(""));
    for i in 0..3 {
        assert_eq!(
            stored(&http, &format!("s{i}")).await,
            Some((
                format!("{}:v{i}", seconds - i).into_bytes(),
                (seconds - i) * 1_000_000
            ))
        );
    }
    // While the server has the directory open, offline mode says what to do instead.
    let busy = tidemark(&args).await;
    assert_eq!(busy.code(), Some(1));
    assert!(
        busy.stderr.contains("Stop the server first"),
        "{}",
        busy.stderr
    );
    assert!(server.stop().success());
    let again = tidemark(&args).await;
    assert_eq!(counts(&again.summary()), [3, 0, 3, 0, 0, 0, 0, 0]);
    source.stop().await;
}

#[tokio::test]
async fn offline_into_a_shared_database() {
    let Some(database) = common::postgres::database().await else {
        return;
    };
    let source = TestServer::start().await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    tsput(&mut tyrant, "shared", &format!("{:016}|v", T0 - 5)).await;
    let from = from(&source);
    let run = tidemark(&[
        "migrate",
        "--from",
        &from,
        "--timestamps",
        "prefix",
        "--database-url",
        &database.url,
    ])
    .await;
    assert_eq!(run.code(), Some(0), "{}", run.stderr);
    assert_eq!(counts(&run.summary()), [1, 1, 0, 0, 0, 0, 0, 0]);
    let url = database.url.clone();
    let target = TestServer::start_with(move |c| c.database.database_url = Some(Secret(url))).await;
    assert_eq!(
        stored(&Http::of(&target), "shared").await,
        Some((format!("{:016}|v", T0 - 5).into_bytes(), T0 - 5))
    );
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn an_unreachable_source_or_target_and_a_bad_url_fail_with_a_clear_error() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().expect("UTF-8 path");
    let nowhere = format!("tyrant://{closed}");
    let run = tidemark(&["migrate", "--from", &nowhere, "--data-dir", data]).await;
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr.contains("cannot reach the Tyrant server at"),
        "{}",
        run.stderr
    );
    assert!(!data_dir.exists(), "no empty store is left behind");

    for bad in ["127.0.0.1:1978", "http://127.0.0.1:1978", "tyrant://host"] {
        let run = tidemark(&["migrate", "--from", bad, "--data-dir", data]).await;
        assert_eq!(run.code(), Some(1), "{bad}");
        assert!(
            run.stderr.contains("--from must be tyrant://HOST:PORT"),
            "{bad}: {}",
            run.stderr
        );
    }

    let source = TestServer::start().await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    assert_eq!(tyrant.put(b"k", b"v").await, OK);
    let from = from(&source);
    let server = format!("http://{closed}");
    let run = tidemark(&["migrate", "--from", &from, "--server", &server]).await;
    assert_eq!(run.code(), Some(1));
    assert!(
        run.stderr.contains("cannot reach the server"),
        "{}",
        run.stderr
    );

    let both = tidemark(&[
        "migrate",
        "--from",
        &from,
        "--data-dir",
        data,
        "--database-url",
        "postgres://127.0.0.1:1/x",
    ])
    .await;
    assert_eq!(both.code(), Some(1));
    assert!(both.stderr.contains("not both"), "{}", both.stderr);
    source.stop().await;
}
