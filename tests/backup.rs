//! Backup, restore, export and import over real sockets and the real binary: snapshots
//! taken while writes go on are consistent and restorable, restore refuses what it
//! should, and import goes through the guard.

mod common;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::http::{Http, header, send};
use common::{T0, TestServer};
use reqwest::Method;
use serde_json::Value;
use tidemark::clock::ManualClock;
use tidemark::config::Secret;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");
const TOKEN: &str = "admin-s3cret";

struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn ok(&self) -> bool {
        self.status.success()
    }

    fn report(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a report ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&self.stdout),
                self.stderr
            )
        })
    }
}

/// Run the binary with a clean environment (no TIDEMARK_* from the host).
async fn tidemark(args: &[&str]) -> Run {
    tidemark_with_input(args, None).await
}

async fn tidemark_with_input(args: &[&str], input: Option<Vec<u8>>) -> Run {
    tidemark_with_env(args, input, &[]).await
}

async fn tidemark_with_env(args: &[&str], input: Option<Vec<u8>>, env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn tidemark");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&input).await.expect("write stdin");
        drop(stdin);
    }
    let output = child.wait_with_output().await.expect("tidemark runs");
    Run {
        status: output.status,
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A fixed set of records of every kind: values with and without a TTL, a binary key,
/// and a tombstone.
async fn seed(http: &Http) {
    assert_eq!(http.put("fixed", T0 - 100, "hello").await.status(), 201);
    let with_ttl = http
        .put_with("ttl", T0 - 90, "{\"user\":42}", |r| {
            r.header("X-TTL", "3600")
                .header("Content-Type", "application/json")
        })
        .await;
    assert_eq!(with_ttl.status(), 201);
    let binary = send(
        http.request(Method::PUT, "/keys/bin%00%FF")
            .header("X-Write-Timestamp", (T0 - 80).to_string())
            .body(vec![0u8, 255, 10, 13]),
    )
    .await;
    assert_eq!(binary.status(), 201);
    assert_eq!(
        http.put("gone", T0 - 70, "soon deleted").await.status(),
        201
    );
    assert_eq!(http.delete("gone", T0 - 50).await.status(), 204);
}

/// What [`seed`] wrote is all there, timestamps included, and the tombstone still
/// refuses an older write.
async fn check_seed(http: &Http) {
    let (status, headers, body) = http.read("fixed").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"hello");
    assert_eq!(
        header(&headers, "x-write-timestamp"),
        (T0 - 100).to_string()
    );
    assert_eq!(header(&headers, "content-type"), "text/plain");

    let (status, headers, body) = http.read("ttl").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"{\"user\":42}");
    assert_eq!(header(&headers, "x-write-timestamp"), (T0 - 90).to_string());
    assert_eq!(
        header(&headers, "x-expires-at"),
        (T0 + 3600 * 1_000_000).to_string()
    );

    let (status, headers, body) = http.read("bin%00%FF").await;
    assert_eq!(status, 200);
    assert_eq!(body, [0u8, 255, 10, 13]);
    assert_eq!(header(&headers, "x-write-timestamp"), (T0 - 80).to_string());

    let (status, _, _) = http.read("gone").await;
    assert_eq!(status, 404);
    // The tombstone came along: a write older than the delete is refused...
    assert_eq!(http.put("gone", T0 - 60, "resurrected").await.status(), 409);
    // ...and a newer one is taken.
    assert_eq!(http.put("gone", T0 - 40, "back").await.status(), 201);
}

/// Start a server on an existing data directory with the test clock at T0.
async fn serve_dir(dir: &Path) -> TestServer {
    TestServer::start_in(common::test_config(dir), None, ManualClock::new(T0)).await
}

async fn with_token(token: &str) -> TestServer {
    let token = token.to_owned();
    TestServer::start_with(move |c| c.auth.auth_token = Some(Secret(token))).await
}

fn seq_key(i: u64) -> String {
    format!("seq-{i:06}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_writes_continue_is_consistent_and_restorable() {
    let server = TestServer::start().await;
    seed(&Http::of(&server)).await;

    // One writer, one key after another: a consistent snapshot holds a gap-free prefix.
    let written = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (written, stop) = (written.clone(), stop.clone());
        let http = Http::of(&server);
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let status = http
                    .put(&seq_key(i), T0 + i, &format!("v{i}"))
                    .await
                    .status();
                assert_eq!(status, 201);
                i += 1;
                written.store(i, Ordering::SeqCst);
            }
        })
    };
    while written.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let dir = tempfile::tempdir().expect("dir");
    let backup = dir.path().join("snap.redb");
    let before = written.load(Ordering::SeqCst);
    let run = tidemark(&[
        "backup",
        "--server",
        &server.url(""),
        "--out",
        path(&backup),
    ])
    .await;
    assert!(run.ok(), "backup failed: {}", run.stderr);
    assert!(run.stderr.contains("wrote"), "{}", run.stderr);
    // Let the writer go on a little past the backup, then stop it.
    let after = written.load(Ordering::SeqCst);
    while written.load(Ordering::SeqCst) < after + 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let total = written.load(Ordering::SeqCst);
    // The temporary snapshot in the data directory is gone, and no temp file next to
    // the output either.
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir())
        .expect("data dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("backup"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let outputs: Vec<_> = std::fs::read_dir(dir.path())
        .expect("out dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(outputs, ["snap.redb"]);
    server.stop().await;

    let restored = tempfile::tempdir().expect("restore dir");
    let run = tidemark(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(restored.path()),
    ])
    .await;
    assert!(run.ok(), "restore failed: {}", run.stderr);

    let server = serve_dir(restored.path()).await;
    let http = Http::of(&server);
    check_seed(&http).await;
    let mut present = 0;
    for i in 0..total {
        let (status, headers, body) = http.read(&seq_key(i)).await;
        if status == 404 {
            break;
        }
        assert_eq!(status, 200);
        assert_eq!(body, format!("v{i}").as_bytes());
        assert_eq!(header(&headers, "x-write-timestamp"), (T0 + i).to_string());
        present = i + 1;
    }
    for i in present..total {
        let (status, _, _) = http.read(&seq_key(i)).await;
        assert_eq!(status, 404, "key {i} present after a gap at {present}");
    }
    assert!(
        present >= before,
        "the snapshot lost acknowledged writes: {present} < {before}"
    );
    assert!(present <= total);
    server.stop().await;
}

#[tokio::test]
async fn offline_backup_needs_the_server_stopped_and_restores() {
    let data = tempfile::tempdir().expect("data dir");
    let data_dir = data.path().to_path_buf();
    let server = serve_dir(&data_dir).await;
    seed(&Http::of(&server)).await;
    let dir = tempfile::tempdir().expect("dir");
    let backup = dir.path().join("offline.redb");

    let run = tidemark(&[
        "backup",
        "--data-dir",
        path(server.data_dir()),
        "--out",
        path(&backup),
    ])
    .await;
    assert!(!run.ok());
    assert!(
        run.stderr.contains("open in another process"),
        "{}",
        run.stderr
    );
    assert!(!backup.exists());

    server.stop().await;
    let run = tidemark(&[
        "backup",
        "--data-dir",
        path(&data_dir),
        "--out",
        path(&backup),
    ])
    .await;
    assert!(run.ok(), "offline backup failed: {}", run.stderr);
    assert!(run.stderr.contains("4 records"), "{}", run.stderr);

    // An existing output is kept unless --force.
    let again = tidemark(&[
        "backup",
        "--data-dir",
        path(&data_dir),
        "--out",
        path(&backup),
    ])
    .await;
    assert!(!again.ok());
    assert!(again.stderr.contains("--force"), "{}", again.stderr);

    let restored = tempfile::tempdir().expect("restore dir");
    let run = tidemark(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(restored.path()),
    ])
    .await;
    assert!(run.ok(), "restore failed: {}", run.stderr);
    assert!(
        run.stderr.contains("4 records (1 tombstones)"),
        "{}",
        run.stderr
    );
    let server = serve_dir(restored.path()).await;
    check_seed(&Http::of(&server)).await;
    server.stop().await;

    let empty = tempfile::tempdir().expect("empty dir");
    let run = tidemark(&[
        "backup",
        "--data-dir",
        path(empty.path()),
        "--out",
        path(&dir.path().join("none.redb")),
    ])
    .await;
    assert!(!run.ok());
    assert!(
        run.stderr.contains("no tidemark database"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn restore_refuses_to_overwrite_without_force_and_refuses_foreign_files() {
    let dir = tempfile::tempdir().expect("dir");
    let first = dir.path().join("first.redb");
    let second = dir.path().join("second.redb");

    let server = TestServer::start().await;
    let http = Http::of(&server);
    assert_eq!(http.put("a", T0, "first").await.status(), 201);
    let run = tidemark(&["backup", "--server", &server.url(""), "--out", path(&first)]).await;
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(http.put("a", T0 + 1, "second").await.status(), 204);
    let run = tidemark(&[
        "backup",
        "--server",
        &server.url(""),
        "--out",
        path(&second),
    ])
    .await;
    assert!(run.ok(), "{}", run.stderr);
    server.stop().await;

    let target = tempfile::tempdir().expect("target");
    let restore = |from: std::path::PathBuf, force: bool| {
        let target = target.path().to_path_buf();
        async move {
            let mut args = vec![
                "restore".to_owned(),
                "--from".to_owned(),
                from.display().to_string(),
                "--data-dir".to_owned(),
                target.display().to_string(),
            ];
            if force {
                args.push("--force".to_owned());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tidemark(&args).await
        }
    };
    assert!(restore(first.clone(), false).await.ok());

    let refused = restore(second.clone(), false).await;
    assert!(!refused.ok());
    assert!(
        refused.stderr.contains("already exists") && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );

    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, vec![0x5au8; 64 * 1024]).expect("write garbage");
    let refused = restore(garbage, true).await;
    assert!(!refused.ok());
    assert!(
        refused.stderr.contains("not a usable tidemark backup"),
        "{}",
        refused.stderr
    );
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").expect("write empty");
    let refused = restore(empty, true).await;
    assert!(!refused.ok());
    assert!(refused.stderr.contains("is empty"), "{}", refused.stderr);

    // Nothing was left behind and the first restore is intact.
    let names: Vec<String> = std::fs::read_dir(target.path())
        .expect("target dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".restore")),
        "{names:?}"
    );
    let server = serve_dir(target.path()).await;
    let (status, _, body) = Http::of(&server).read("a").await;
    assert_eq!((status, body.as_slice()), (200, b"first".as_slice()));

    // Not while a server has the database open, even with --force.
    let refused = restore(second.clone(), true).await;
    assert!(!refused.ok());
    assert!(
        refused.stderr.contains("open in another process"),
        "{}",
        refused.stderr
    );
    server.stop().await;

    let replaced = restore(second, true).await;
    assert!(replaced.ok(), "{}", replaced.stderr);
    let server = serve_dir(target.path()).await;
    let (status, headers, body) = Http::of(&server).read("a").await;
    assert_eq!((status, body.as_slice()), (200, b"second".as_slice()));
    assert_eq!(header(&headers, "x-write-timestamp"), (T0 + 1).to_string());
    server.stop().await;
}

#[tokio::test]
async fn export_then_import_into_an_empty_store_round_trips_every_record() {
    let source = TestServer::start().await;
    seed(&Http::of(&source)).await;
    let dir = tempfile::tempdir().expect("dir");
    let exported = dir.path().join("export.jsonl");
    let run = tidemark(&[
        "export",
        "--server",
        &source.url(""),
        "--out",
        path(&exported),
    ])
    .await;
    assert!(run.ok(), "export failed: {}", run.stderr);
    assert!(run.stderr.contains("wrote 4 records"), "{}", run.stderr);
    let text = std::fs::read_to_string(&exported).expect("export file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 4);
    let gone = lines
        .iter()
        .find(|l| l["key"] == "Z29uZQ==")
        .expect("the tombstone is exported");
    assert_eq!(gone["tombstone"], true);
    assert_eq!(gone["timestamp"], T0 - 50);
    assert_eq!(gone["deleted_at"], T0);
    assert_eq!(gone["value"], Value::Null);
    let fixed = lines
        .iter()
        .find(|l| l["key"] == "Zml4ZWQ=")
        .expect("fixed");
    assert_eq!(fixed["value"], "aGVsbG8=");
    assert_eq!(fixed["content_type"], "text/plain");
    assert_eq!(fixed["expires_at"], Value::Null);

    let target = TestServer::start().await;
    let run = tidemark(&[
        "import",
        "--server",
        &target.url(""),
        "--in",
        path(&exported),
    ])
    .await;
    assert!(run.ok(), "import failed: {}", run.stderr);
    let report = run.report();
    assert_eq!(report["lines"], 4);
    assert_eq!(report["applied"], 4);
    assert_eq!(report["invalid"], 0);

    // Exporting the copy gives the same bytes (through stdout this time).
    let again = tidemark(&["export", "--server", &target.url(""), "--out", "-"]).await;
    assert!(again.ok(), "{}", again.stderr);
    assert_eq!(String::from_utf8_lossy(&again.stdout), text);
    check_seed(&Http::of(&target)).await;
    target.stop().await;

    // Offline, from stdin into a fresh data directory, and back out.
    let offline = tempfile::tempdir().expect("offline dir");
    let run = tidemark_with_input(
        &["import", "--data-dir", path(offline.path()), "--in", "-"],
        Some(text.clone().into_bytes()),
    )
    .await;
    assert!(run.ok(), "offline import failed: {}", run.stderr);
    assert_eq!(run.report()["applied"], 4);
    let out = tidemark(&["export", "--data-dir", path(offline.path()), "--out", "-"]).await;
    assert!(out.ok(), "{}", out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);

    // Importing the same input again changes nothing.
    let run = tidemark(&[
        "import",
        "--server",
        &source.url(""),
        "--in",
        path(&exported),
    ])
    .await;
    assert!(run.ok(), "{}", run.stderr);
    assert_eq!(run.report()["repeated"], 4);
    source.stop().await;
}

/// Moving between engines: an export from the embedded store imports into a shared
/// database with every timestamp, expiry, content type and tombstone, and back.
#[tokio::test]
async fn export_from_one_engine_imports_into_the_other_with_every_timestamp_and_tombstone() {
    let Some(shared) = TestServer::start_on(common::Engine::Postgres).await else {
        return;
    };
    let embedded = TestServer::start_on(common::Engine::Redb)
        .await
        .expect("the embedded engine needs nothing");
    seed(&Http::of(&embedded)).await;
    let exported = tidemark(&["export", "--server", &embedded.url(""), "--out", "-"]).await;
    assert!(exported.ok(), "{}", exported.stderr);
    let moved = tidemark_with_input(
        &["import", "--server", &shared.url(""), "--in", "-"],
        Some(exported.stdout.clone()),
    )
    .await;
    assert!(moved.ok(), "{}", moved.stderr);
    assert_eq!(moved.report()["applied"], 4);
    // The shared database exports the same bytes, and serves the same records.
    let again = tidemark(&["export", "--server", &shared.url(""), "--out", "-"]).await;
    assert!(again.ok(), "{}", again.stderr);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&exported.stdout)
    );
    check_seed(&Http::of(&shared)).await;

    // And back, into a fresh embedded store, after check_seed's newer write.
    let back = TestServer::start_on(common::Engine::Redb)
        .await
        .expect("the embedded engine needs nothing");
    let from_shared = tidemark(&["export", "--server", &shared.url(""), "--out", "-"]).await;
    let returned = tidemark_with_input(
        &["import", "--server", &back.url(""), "--in", "-"],
        Some(from_shared.stdout.clone()),
    )
    .await;
    assert!(returned.ok(), "{}", returned.stderr);
    let round_trip = tidemark(&["export", "--server", &back.url(""), "--out", "-"]).await;
    assert_eq!(round_trip.stdout, from_shared.stdout);
    let (status, body) = {
        let (status, _, body) = Http::of(&back).read("gone").await;
        (status, body)
    };
    assert_eq!((status, body.as_slice()), (200, b"back".as_slice()));
    for server in [embedded, shared, back] {
        server.stop().await;
    }
}

#[tokio::test]
async fn import_skips_records_older_than_the_store_and_applies_missing_ones() {
    let source = TestServer::start().await;
    let http = Http::of(&source);
    assert_eq!(http.put("a", T0, "old-a").await.status(), 201);
    assert_eq!(http.put("b", T0, "b").await.status(), 201);
    assert_eq!(http.put("c", T0 - 10, "c").await.status(), 201);
    assert_eq!(http.delete("c", T0).await.status(), 204);
    assert_eq!(http.put("d", T0, "d").await.status(), 201);
    assert_eq!(http.put("e", T0, "e").await.status(), 201);
    let dir = tempfile::tempdir().expect("dir");
    let exported = dir.path().join("old.jsonl");
    let run = tidemark(&[
        "export",
        "--server",
        &source.url(""),
        "--out",
        path(&exported),
    ])
    .await;
    assert!(run.ok(), "{}", run.stderr);
    source.stop().await;

    let target = TestServer::start().await;
    let http = Http::of(&target);
    assert_eq!(http.put("a", T0 + 10, "new-a").await.status(), 201);
    assert_eq!(http.put("b", T0, "b").await.status(), 201);
    assert_eq!(http.put("d", T0, "other-d").await.status(), 201);
    let run = tidemark(&[
        "import",
        "--server",
        &target.url(""),
        "--in",
        path(&exported),
    ])
    .await;
    assert!(run.ok(), "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["applied"], 2, "{report}"); // c (a tombstone) and e
    assert_eq!(report["stale"], 1, "{report}"); // a
    assert_eq!(report["repeated"], 1, "{report}"); // b
    assert_eq!(report["tie"], 1, "{report}"); // d
    assert_eq!(report["invalid"], 0, "{report}");
    assert!(run.stderr.contains("1 stale"), "{}", run.stderr);

    let (status, headers, body) = http.read("a").await;
    assert_eq!((status, body.as_slice()), (200, b"new-a".as_slice()));
    assert_eq!(header(&headers, "x-write-timestamp"), (T0 + 10).to_string());
    let (_, _, body) = http.read("d").await;
    assert_eq!(body, b"other-d");
    let (_, _, body) = http.read("e").await;
    assert_eq!(body, b"e");
    // The imported tombstone guards like one written here.
    assert_eq!(http.read("c").await.0, 404);
    assert_eq!(http.put("c", T0 - 1, "late").await.status(), 409);
    target.stop().await;
}

#[tokio::test]
async fn admin_routes_require_the_token_when_configured() {
    let server = with_token(TOKEN).await;
    let client = reqwest::Client::new();
    for (method, route) in [
        (reqwest::Method::GET, "/admin/backup"),
        (reqwest::Method::GET, "/admin/export"),
        (reqwest::Method::POST, "/admin/import"),
    ] {
        let denied = client
            .request(method.clone(), server.url(route))
            .body("")
            .send()
            .await
            .expect("admin request");
        assert_eq!(denied.status(), 401, "{route}");
        assert_eq!(
            denied.headers()["content-type"],
            "application/problem+json",
            "{route}"
        );
        let wrong = client
            .request(method.clone(), server.url(route))
            .bearer_auth("wrong")
            .body("")
            .send()
            .await
            .expect("admin request");
        assert_eq!(wrong.status(), 401, "{route}");
        let allowed = client
            .request(method, server.url(route))
            .bearer_auth(TOKEN)
            .body("")
            .send()
            .await
            .expect("admin request");
        // A shared database has no file to back up: answered, with the token, as 501;
        // an import needs a body: the token admits it, and its emptiness is a 400.
        let shared_database = common::engine() == common::Engine::Postgres;
        let expected = match route {
            "/admin/backup" if shared_database => 501,
            "/admin/import" => 400,
            _ => 200,
        };
        assert_eq!(allowed.status(), expected, "{route}");
    }

    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("b.redb");
    let run = tidemark(&["backup", "--server", &server.url(""), "--out", path(&out)]).await;
    assert!(!run.ok());
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(run.stderr.contains("--token"), "{}", run.stderr);
    assert!(!out.exists());
    let run = tidemark(&[
        "backup",
        "--server",
        &server.url(""),
        "--token",
        TOKEN,
        "--out",
        path(&out),
    ])
    .await;
    if common::engine() == common::Engine::Postgres {
        assert!(!run.ok(), "a backup file of a shared database");
        assert!(run.stderr.contains("501"), "{}", run.stderr);
        assert!(!out.exists());
    } else {
        assert!(run.ok(), "{}", run.stderr);
    }
    // The token and the server also come from the environment, as in a container.
    let url = server.url("");
    let run = tidemark_with_env(
        &["export", "--out", "-"],
        None,
        &[
            ("TIDEMARK_SERVER", url.as_str()),
            ("TIDEMARK_AUTH_TOKEN", TOKEN),
        ],
    )
    .await;
    assert!(run.ok(), "{}", run.stderr);
    server.stop().await;
}

#[tokio::test]
async fn import_with_an_empty_body_is_400_and_a_blank_one_an_empty_report() {
    let server = TestServer::start().await;
    let http = Http::of(&server);
    let empty = send(http.request(Method::POST, "/admin/import")).await;
    assert_eq!(empty.status(), 400);
    assert_eq!(
        header(empty.headers(), "content-type"),
        "application/problem+json"
    );
    let problem: Value = serde_json::from_slice(&empty.bytes().await.expect("body")).expect("json");
    assert_eq!(
        problem["type"], "urn:tidemark:problem:empty-body",
        "{problem}"
    );
    // Blank lines are a body: skipped and not counted, as in a file.
    let blank = send(http.request(Method::POST, "/admin/import").body("\n\n")).await;
    assert_eq!(blank.status(), 200);
    assert_eq!(header(blank.headers(), "cache-control"), "no-store");
    let report: Value = serde_json::from_slice(&blank.bytes().await.expect("body")).expect("json");
    assert_eq!(report["lines"], 0, "{report}");
    server.stop().await;
}

#[tokio::test]
async fn malformed_import_lines_are_reported_not_fatal() {
    let server = TestServer::start_with(|c| c.limits.max_value_bytes = 1024).await;
    let http = Http::of(&server);
    let good = |key: &str, value: &str| {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        serde_json::json!({
            "key": b64.encode(key), "timestamp": T0, "tombstone": false,
            "value": b64.encode(value), "content_type": "text/plain",
            "expires_at": null, "deleted_at": null,
        })
        .to_string()
    };
    let too_big = good("big", &"x".repeat(2000));
    let future = good("future", "v").replace(&T0.to_string(), &(T0 + 3_600_000_000).to_string());
    let overlong = format!("{{\"key\": \"{}\"}}", "A".repeat(200_000));
    let body = [
        good("one", "1"),                        // 1
        "{not json".to_owned(),                  // 2
        good("bad", "v").replace("YmFk", "!!!"), // 3: key not base64
        String::new(),                           // 4: blank, skipped
        overlong,                                // 5
        too_big,                                 // 6: over --max-value-bytes
        future,                                  // 7: beyond the skew limit
        "\r".to_owned(),                         // 8: blank (CRLF), skipped
        good("two", "2"),                        // 9, no trailing newline
    ]
    .join("\n");
    let response = send(
        http.request(Method::POST, "/admin/import")
            .body(body.clone()),
    )
    .await;
    assert_eq!(response.status(), 200);
    let report: Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("report");
    assert_eq!(report["lines"], 7, "{report}");
    assert_eq!(report["applied"], 2, "{report}");
    assert_eq!(report["invalid"], 5, "{report}");
    let lines: Vec<u64> = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(lines, [2, 3, 5, 6, 7], "{report}");
    let reason = |line: usize| {
        report["errors"][line]["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(reason(0).contains("not a record line"), "{report}");
    assert!(reason(1).contains("base64"), "{report}");
    assert!(reason(2).contains("longer than"), "{report}");
    assert!(reason(3).contains("limit"), "{report}");
    assert!(reason(4).contains("ahead of the server clock"), "{report}");
    assert_eq!(http.read("one").await.2, b"1");
    assert_eq!(http.read("two").await.2, b"2");

    // The CLI reports the same, exits 3, and still imports the good lines.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("mixed.jsonl");
    std::fs::write(&file, &body).expect("write");
    let run = tidemark(&["import", "--server", &server.url(""), "--in", path(&file)]).await;
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    assert_eq!(run.report()["invalid"], 5);
    assert!(run.stderr.contains("line 2:"), "{}", run.stderr);
    server.stop().await;
}

#[tokio::test]
async fn admin_transfers_are_not_cut_by_the_request_timeout() {
    let server = TestServer::start_with(|c| c.request_timeout = Duration::from_millis(200)).await;
    let client = reqwest::Client::new();
    let (mut writer, reader) = tokio::io::duplex(1024);
    let feeder = tokio::spawn(async move {
        for i in 0..6u64 {
            let line = format!(
                "{{\"key\":\"{}\",\"timestamp\":{},\"tombstone\":true,\"value\":null,\
                 \"content_type\":null,\"expires_at\":null,\"deleted_at\":null}}\n",
                base64_of(&format!("slow-{i}")),
                T0
            );
            writer.write_all(line.as_bytes()).await.expect("feed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(reader));
    let response = client
        .post(server.url("/admin/import"))
        .body(body)
        .send()
        .await
        .expect("slow import");
    feeder.await.expect("feeder");
    assert_eq!(response.status(), 200);
    let report: Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("report");
    assert_eq!(report["applied"], 6, "{report}");
    server.stop().await;
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
