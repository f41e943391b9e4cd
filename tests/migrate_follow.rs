//! `tidemark migrate --follow`, through the real binary over loopback. No ttserver
//! here: a small in-test master stands in front of a tidemark server's Tyrant port.
//! It forwards every ordinary request (the copy's iterinit/iternext/mget, stat, the
//! follow's read-back `get`s) to that port, and answers `repl` (`C8 A0`) itself in
//! the stream format of PROTOCOL.md §7: it checks ts and sid, sends its server id,
//! then the scripted log records at or after the requested timestamp, then, every
//! 20 ms, the records logged since or else a `CA` keep-alive. Each test checks what each logged command did in the
//! target, the timestamps of each `--timestamps` mode, and where a second run resumes.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{Http, header};
use common::tyrant::{OK, Tyrant};
use common::{T0, TestServer};
use serde_json::Value;
use tidemark::tyrant::client::{LogRecord, Request, double_to_wire, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Child;
use tokio::time::{sleep, timeout};

const BIN: &str = env!("CARGO_BIN_EXE_tidemark");
/// The stand-in master's `-sid`.
const MASTER_SID: u32 = 1;
/// The slave id the tests send.
const SID: u32 = 7;
/// Longest a test waits for one run of the binary.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// The log's timestamp for record `i`: after T0, the source's clock at the copy.
fn at(i: u64) -> u64 {
    T0 + i * 1000
}

fn logged(i: u64, request: Request, status: u8) -> LogRecord {
    let mut body = Vec::new();
    encode(&request, &mut body);
    body.push(status);
    LogRecord {
        timestamp: at(i),
        origin_sid: MASTER_SID,
        body,
    }
}

fn put(i: u64, key: &str, value: &[u8]) -> LogRecord {
    logged(
        i,
        Request::Put {
            key: key.into(),
            value: value.to_vec(),
        },
        0,
    )
}

/// The stand-in master.
#[derive(Clone)]
struct Master {
    addr: SocketAddr,
    /// The update log; tests append between runs.
    log: Arc<Mutex<Vec<LogRecord>>>,
    /// Every repl request: (ts, sid).
    requests: Arc<Mutex<Vec<(u64, u32)>>>,
    /// Close the first feed after its records (to make the follower reconnect).
    close_first: bool,
}

impl Master {
    async fn start(upstream: SocketAddr, close_first: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let master = Master {
            addr: listener.local_addr().expect("address"),
            log: Arc::default(),
            requests: Arc::default(),
            close_first,
        };
        let serving = master.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serving.clone().serve(socket, upstream));
            }
        });
        master
    }

    fn from(&self) -> String {
        format!("tyrant://{}", self.addr)
    }

    fn append(&self, records: impl IntoIterator<Item = LogRecord>) {
        self.log.lock().expect("log").extend(records);
    }

    fn requests(&self) -> Vec<(u64, u32)> {
        self.requests.lock().expect("requests").clone()
    }

    async fn serve(self, mut socket: TcpStream, upstream: SocketAddr) {
        let mut head = [0u8; 2];
        let Ok(Ok(_)) = timeout(RUN_LIMIT, socket.read_exact(&mut head)).await else {
            return;
        };
        if head != [0xC8, 0xA0] {
            let Ok(mut tidemark) = TcpStream::connect(upstream).await else {
                return;
            };
            if tidemark.write_all(&head).await.is_ok() {
                let _ = timeout(
                    RUN_LIMIT,
                    tokio::io::copy_bidirectional(&mut socket, &mut tidemark),
                )
                .await;
            }
            return;
        }
        let mut fields = [0u8; 12];
        let Ok(Ok(_)) = timeout(RUN_LIMIT, socket.read_exact(&mut fields)).await else {
            return;
        };
        let ts = u64::from_be_bytes(fields[..8].try_into().expect("8 bytes"));
        let sid = u32::from_be_bytes(fields[8..].try_into().expect("4 bytes"));
        let first = {
            let mut requests = self.requests.lock().expect("requests");
            requests.push((ts, sid));
            requests.len() == 1
        };
        // As ttserver: a bad ts or sid, or the master's own, closes without a reply.
        if ts < 1 || sid < 1 || sid == MASTER_SID {
            return;
        }
        let mut out = MASTER_SID.to_be_bytes().to_vec();
        let mut sent = {
            let log = self.log.lock().expect("log");
            for record in log.iter() {
                if record.timestamp >= ts {
                    record.encode(&mut out);
                }
            }
            log.len()
        };
        if socket.write_all(&out).await.is_err() || (first && self.close_first) {
            return;
        }
        // As a live master: records logged since, as they come, and a keep-alive
        // whenever there are none; until the follower goes away, bounded.
        for _ in 0..3000 {
            sleep(Duration::from_millis(20)).await;
            out.clear();
            {
                let log = self.log.lock().expect("log");
                for record in &log[sent..] {
                    record.encode(&mut out);
                }
                sent = log.len();
            }
            if out.is_empty() {
                out.push(0xCA);
            }
            if socket.write_all(&out).await.is_err() {
                return;
            }
        }
    }
}

struct Run {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
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

/// `migrate --from master --server target --follow --sid 7 extra...`; with
/// `terminate_after`, stopped by SIGTERM that long after its feed opened.
async fn follow(
    master: &Master,
    target: &TestServer,
    extra: &[&str],
    terminate_after: Option<Duration>,
) -> Run {
    let asked = master.requests().len();
    let child = start_follow(master, target, extra);
    let Some(wait) = terminate_after else {
        return finish(child).await;
    };
    // Once the feed is open (bounded wait), and a little more for its records.
    for _ in 0..200 {
        if master.requests().len() > asked {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    sleep(wait).await;
    terminate(child).await
}

/// The follower started, not waited for.
fn start_follow(master: &Master, target: &TestServer, extra: &[&str]) -> Child {
    let (from, server, sid) = (master.from(), target.url(""), SID.to_string());
    let mut args = vec![
        "migrate", "--from", &from, "--server", &server, "--follow", "--sid", &sid,
    ];
    args.extend_from_slice(extra);
    tokio::process::Command::new(BIN)
        .args(&args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tidemark starts")
}

/// SIGTERM, then its output.
async fn terminate(child: Child) -> Run {
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
    finish(child).await
}

/// Its output once it stops by itself (bounded).
async fn finish(child: Child) -> Run {
    let output = timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("migrate --follow stops in time")
        .expect("tidemark runs");
    Run {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

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

fn count(summary: &Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field}: {summary}"))
}

#[tokio::test]
async fn now_copies_then_applies_each_logged_command_and_a_restart_resumes_without_duplicates() {
    let source = TestServer::start().await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    // The master's data as the log leaves it (the copy reads it; the read-backs too).
    let counter = 5i32.to_le_bytes();
    let (integ, fract) = double_to_wire(3.5);
    let double = 3.5f64.to_le_bytes();
    for (key, value) in [
        (&b"k1"[..], &b"one"[..]),
        (b"k2", b"two"),
        (b"cat", b"ab"),
        (b"n", &counter),
        (b"d", &double),
        (b"k4", b"four"),
    ] {
        assert_eq!(tyrant.put(key, value).await, OK);
    }
    let master = Master::start(source.tyrant, false).await;
    master.append([
        put(1, "k1", b"one"),
        logged(
            2,
            Request::PutKeep {
                key: b"k2".to_vec(),
                value: b"two".to_vec(),
            },
            0,
        ),
        // Failed on the master: nothing to apply.
        logged(
            3,
            Request::PutKeep {
                key: b"k1".to_vec(),
                value: b"lost".to_vec(),
            },
            1,
        ),
        put(4, "cat", b"a"),
        logged(
            5,
            Request::PutCat {
                key: b"cat".to_vec(),
                value: b"b".to_vec(),
            },
            0,
        ),
        logged(
            6,
            Request::AddInt {
                key: b"n".to_vec(),
                num: 5,
            },
            0,
        ),
        logged(
            7,
            Request::AddDouble {
                key: b"d".to_vec(),
                integ,
                fract,
            },
            0,
        ),
        put(8, "gone", b"g"),
        logged(
            9,
            Request::Out {
                key: b"gone".to_vec(),
            },
            0,
        ),
        logged(10, Request::Sync, 0),
        put(11, "k4", b"four"),
    ]);
    let target = TestServer::start().await;
    let run = follow(&master, &target, &["--follow-for", "2s"], None).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let summary = run.summary();
    // The copy: the source's clock (T0, from its stat) minus 1 µs, so every log
    // record from T0 on wins over it.
    assert_eq!(count(&summary, "copied"), 6, "{summary}");
    assert_eq!(count(&summary, "started_at"), T0 - 1);
    assert_eq!(master.requests(), vec![(T0, SID)]);
    let followed = &summary["follow"];
    assert_eq!(followed["resumed"], false, "{summary}");
    assert_eq!(followed["stopped_by"], "follow-for");
    assert_eq!(followed["master_sid"], MASTER_SID);
    assert_eq!(count(followed, "log_records"), 11, "{summary}");
    assert_eq!(count(followed, "applied"), 9, "{summary}");
    assert_eq!(count(followed, "failed_at_source"), 1, "{summary}");
    assert_eq!(count(followed, "ignored"), 1, "{summary}");
    assert_eq!(count(followed, "position"), at(11), "{summary}");

    let http = Http::of(&target);
    assert_eq!(stored(&http, "k1").await, Some((b"one".to_vec(), at(1))));
    assert_eq!(stored(&http, "k2").await, Some((b"two".to_vec(), at(2))));
    // putcat, addint, adddouble: the master's result, read back, at the log's time.
    assert_eq!(stored(&http, "cat").await, Some((b"ab".to_vec(), at(5))));
    assert_eq!(stored(&http, "n").await, Some((counter.to_vec(), at(6))));
    assert_eq!(stored(&http, "d").await, Some((double.to_vec(), at(7))));
    assert_eq!(stored(&http, "gone").await, None);
    assert_eq!(stored(&http, "k4").await, Some((b"four".to_vec(), at(11))));
    // The position is an ordinary record under the documented prefix.
    let position = format!("_tidemark.migrate/follow/{}", master.addr);
    let segment = position.replace('/', "%2F").replace(':', "%3A");
    assert_eq!(
        stored(&http, &segment).await,
        Some((at(11).to_string().into_bytes(), at(11)))
    );

    // The master goes on: a vanish, then a new key. The second run finds the
    // position, skips the copy, asks for the log from there (so gets record 11
    // again, which the guard refuses as repeated), and stops on SIGTERM.
    assert_eq!(tyrant.call(Request::Vanish).await, OK);
    assert_eq!(tyrant.put(b"k5", b"five").await, OK);
    master.append([logged(12, Request::Vanish, 0), put(13, "k5", b"five")]);
    let again = follow(&master, &target, &[], Some(Duration::from_secs(1))).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    let summary = again.summary();
    assert_eq!(count(&summary, "read"), 0, "no copy: {summary}");
    assert_eq!(master.requests(), vec![(T0, SID), (at(11), SID)]);
    let followed = &summary["follow"];
    assert_eq!(followed["resumed"], true, "{summary}");
    assert_eq!(followed["stopped_by"], "signal");
    assert_eq!(count(followed, "log_records"), 3, "{summary}");
    assert_eq!(count(followed, "repeated"), 1, "{summary}");
    assert_eq!(count(followed, "vanished"), 6, "{summary}");
    assert_eq!(count(followed, "applied"), 1, "{summary}");
    assert_eq!(count(followed, "position"), at(13), "{summary}");
    for key in ["k1", "k2", "cat", "n", "d", "k4"] {
        assert_eq!(stored(&http, key).await, None, "{key} vanished");
    }
    assert_eq!(stored(&http, "k5").await, Some((b"five".to_vec(), at(13))));
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn prefix_stamps_with_the_values_digits_and_a_lost_feed_is_reopened_where_it_stopped() {
    let source = TestServer::start().await;
    let master = Master::start(source.tyrant, true).await;
    let stamped = format!("{:016}|session", T0 - 500);
    master.append([
        put(1, "p1", stamped.as_bytes()),
        put(2, "plain", b"no digits"),
    ]);
    let target = TestServer::start().await;
    let run = follow(
        &master,
        &target,
        &["--timestamps", "prefix", "--follow-for", "2s"],
        None,
    )
    .await;
    // A value without its digits is skipped and counted: exit 3.
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let summary = run.summary();
    let followed = &summary["follow"];
    // The first feed closed after its records; the second resumed at the last one.
    assert_eq!(master.requests(), vec![(T0, SID), (at(2), SID)]);
    assert_eq!(count(followed, "reconnects"), 1, "{summary}");
    assert_eq!(count(followed, "log_records"), 3, "{summary}");
    assert_eq!(count(followed, "applied"), 1, "{summary}");
    assert_eq!(count(followed, "no_timestamp"), 2, "{summary}");
    assert_eq!(followed["errors"][0]["key"], "plain", "{summary}");
    let http = Http::of(&target);
    assert_eq!(
        stored(&http, "p1").await,
        Some((stamped.into_bytes(), T0 - 500))
    );
    assert_eq!(stored(&http, "plain").await, None);
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn ext_keys_hold_each_value_until_its_timestamp_record_and_resume_before_a_waiting_one() {
    let source = TestServer::start().await;
    let master = Master::start(source.tyrant, false).await;
    let stamp = T0 - 2000;
    master.append([
        put(1, "e1", b"value"),
        put(2, "timestamp.e1", stamp.to_string().as_bytes()),
        // Never followed by its timestamp record.
        put(3, "e2", b"waiting"),
    ]);
    let target = TestServer::start().await;
    let args = ["--timestamps", "ext-keys", "--follow-for", "2s"];
    let run = follow(&master, &target, &args, None).await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    let summary = run.summary();
    let followed = &summary["follow"];
    assert_eq!(count(followed, "applied"), 1, "{summary}");
    assert_eq!(count(followed, "timestamp_records"), 1, "{summary}");
    assert_eq!(count(followed, "no_timestamp"), 1, "{summary}");
    assert_eq!(followed["errors"][0]["key"], "e2", "{summary}");
    // The position stays at the value still waiting, so a next run reads it again.
    assert_eq!(count(followed, "position"), at(3), "{summary}");
    let http = Http::of(&target);
    assert_eq!(stored(&http, "e1").await, Some((b"value".to_vec(), stamp)));
    assert_eq!(stored(&http, "timestamp.e1").await, None);
    assert_eq!(stored(&http, "e2").await, None);

    // Its timestamp record arrives: the next run applies it.
    master.append([put(4, "timestamp.e2", (T0 - 1000).to_string().as_bytes())]);
    let again = follow(&master, &target, &args, None).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(master.requests(), vec![(T0, SID), (at(3), SID)]);
    assert_eq!(
        stored(&http, "e2").await,
        Some((b"waiting".to_vec(), T0 - 1000))
    );
    source.stop().await;
    target.stop().await;
}

#[tokio::test]
async fn the_masters_own_sid_is_refused_with_a_clear_error() {
    let source = TestServer::start().await;
    let master = Master::start(source.tyrant, false).await;
    let target = TestServer::start().await;
    let (from, server) = (master.from(), target.url(""));
    let output = timeout(
        RUN_LIMIT,
        tokio::process::Command::new(BIN)
            .args([
                "migrate", "--from", &from, "--server", &server, "--follow", "--sid", "1",
            ])
            .env_clear()
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("stops in time")
    .expect("tidemark runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("closed the repl request"), "{stderr}");
    source.stop().await;
    target.stop().await;
}

/// The binary with `args`, to its end (within [`RUN_LIMIT`]).
async fn run_offline(args: &[&str]) -> std::process::Output {
    timeout(
        RUN_LIMIT,
        tokio::process::Command::new(BIN)
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("stops in time")
    .expect("tidemark runs")
}

#[tokio::test]
async fn offline_into_a_data_dir_the_follow_applies_and_resumes_from_the_stored_position() {
    let source = TestServer::start().await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    assert_eq!(tyrant.put(b"kept", b"copied").await, OK);
    let master = Master::start(source.tyrant, false).await;
    master.append([
        put(1, "o2", b"two"),
        logged(
            2,
            Request::Out {
                key: b"o2".to_vec(),
            },
            0,
        ),
        put(3, "o1", b"one"),
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().expect("UTF-8 path");
    let (from, sid) = (master.from(), SID.to_string());
    let args = [
        "migrate",
        "--from",
        &from,
        "--data-dir",
        data,
        "--follow",
        "--sid",
        &sid,
        "--follow-for",
        "1s",
    ];
    let first = run_offline(&args).await;
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let summary: Value = serde_json::from_slice(&first.stdout).expect("summary");
    assert_eq!(count(&summary, "copied"), 1, "{summary}");
    assert_eq!(count(&summary["follow"], "applied"), 3, "{summary}");

    master.append([put(4, "o3", b"three")]);
    let second = run_offline(&args).await;
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let summary: Value = serde_json::from_slice(&second.stdout).expect("summary");
    assert_eq!(summary["follow"]["resumed"], true, "{summary}");
    assert_eq!(count(&summary["follow"], "repeated"), 1, "{summary}");
    assert_eq!(count(&summary["follow"], "applied"), 1, "{summary}");
    assert_eq!(master.requests(), vec![(T0, SID), (at(3), SID)]);

    let server = common::process::Process::serve(["--data-dir", data], &[]);
    let http = Http::new(server.url(""));
    assert_eq!(
        stored(&http, "kept").await,
        Some((b"copied".to_vec(), T0 - 1))
    );
    assert_eq!(stored(&http, "o1").await, Some((b"one".to_vec(), at(3))));
    assert_eq!(stored(&http, "o2").await, None);
    assert_eq!(stored(&http, "o3").await, Some((b"three".to_vec(), at(4))));
    assert!(server.stop().success());
    source.stop().await;
}

/// The cutover of the README: a master that keeps taking writes during the copy and
/// the follow (each write applied to its data and logged, as ttserver does) ends with
/// tidemark holding exactly the master's data, every key at its last write's
/// timestamp: nothing written during the move is lost or rolled back.
#[tokio::test]
async fn a_master_taking_writes_through_copy_and_follow_loses_none_of_them() {
    const KEYS: u64 = 200;
    const WRITES: u64 = 1200;
    let source = TestServer::start().await;
    let master = Master::start(source.tyrant, false).await;
    let mut tyrant = Tyrant::connect(source.tyrant).await;
    let value = |i: u64, key: u64| format!("{:016}|session {key} write {i}", at(i));
    // The sessions already there before the move, each logged as it was written.
    for key in 0..KEYS {
        let i = key + 1;
        let v = value(i, key);
        assert_eq!(
            tyrant.put(format!("s{key}").as_bytes(), v.as_bytes()).await,
            OK
        );
        master.append([put(i, &format!("s{key}"), v.as_bytes())]);
    }
    let target = TestServer::start().await;
    let child = start_follow(&master, &target, &["--timestamps", "prefix"]);
    // The app servers keep writing through the copy and the follow: updates of the
    // existing sessions and new ones, a few every millisecond.
    let mut last = std::collections::BTreeMap::new();
    for i in KEYS + 1..=KEYS + WRITES {
        let key = (i * 7919) % (KEYS + 100);
        let v = value(i, key);
        assert_eq!(
            tyrant.put(format!("s{key}").as_bytes(), v.as_bytes()).await,
            OK
        );
        master.append([put(i, &format!("s{key}"), v.as_bytes())]);
        last.insert(key, v);
        if i % 8 == 0 {
            sleep(Duration::from_millis(1)).await;
        }
    }
    for key in 0..KEYS {
        last.entry(key).or_insert_with(|| value(key + 1, key));
    }
    // One last write once the feed is open, so after the copy (which comes first):
    // a new session that only the follow can bring. Once the target holds it, the
    // follower has read every record logged before it (on a slow machine the copy
    // can see every earlier write, so none of those shows the follow's progress).
    for _ in 0..400 {
        if !master.requests().is_empty() {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let (final_i, final_key) = (KEYS + WRITES + 1, KEYS + 100);
    let v = value(final_i, final_key);
    let final_name = format!("s{final_key}");
    assert_eq!(tyrant.put(final_name.as_bytes(), v.as_bytes()).await, OK);
    master.append([put(final_i, &final_name, v.as_bytes())]);
    last.insert(final_key, v);
    // Wait (bounded) until the follower has applied it.
    let http = Http::of(&target);
    for _ in 0..400 {
        if stored(&http, &final_name).await.map(|(_, ts)| ts) == Some(at(final_i)) {
            break;
        }
        sleep(Duration::from_millis(50)).await;
    }
    let run = terminate(child).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let summary = run.summary();
    let followed = &summary["follow"];
    assert_eq!(count(&summary, "failed"), 0, "{summary}");
    assert_eq!(count(followed, "position"), at(final_i), "{summary}");
    assert_eq!(count(followed, "log_records"), final_i, "{summary}");
    for (key, v) in &last {
        let name = format!("s{key}");
        let expected = v[..16].parse::<u64>().expect("digits");
        assert_eq!(
            stored(&http, &name).await,
            Some((v.clone().into_bytes(), expected)),
            "{name}"
        );
        assert_eq!(
            tyrant.get(name.as_bytes()).await.as_deref(),
            Some(v.as_bytes())
        );
    }
    source.stop().await;
    target.stop().await;
}
