//! Deployment behaviour over real sockets: authentication, CORS, timeouts, connection
//! caps, the separate metrics address, draining on shutdown, the healthcheck and bench
//! commands.

mod common;

use std::time::Duration;

use common::TestServer;
use common::http::{Http, send};
use reqwest::Method;
use tidemark::config::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "s3cret-token";

/// PUT /keys/k, with `token` as the bearer when given.
async fn put(http: &Http, token: Option<&str>) -> u16 {
    let http = token.map_or_else(|| http.clone(), |t| http.with_token(t));
    http.put("k", common::T0, "v").await.status().as_u16()
}

#[tokio::test]
async fn bearer_token_guards_keys_and_metrics_but_not_health() {
    let server = TestServer::start_with(|c| c.auth.auth_token = Some(Secret(TOKEN.into()))).await;
    let http = Http::of(&server);
    assert_eq!(put(&http, None).await, 401);
    assert_eq!(put(&http, Some("wrong")).await, 401);
    assert_eq!(put(&http, Some(TOKEN)).await, 201);

    let denied = http.get("k").await;
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Bearer");
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    let listed = http.list(&[]).await;
    assert_eq!(listed.status(), 401);
    let metrics = send(http.request(Method::GET, "/metrics")).await;
    assert_eq!(metrics.status(), 401);
    for open in ["/healthz", "/readyz", "/openapi.json"] {
        let r = send(http.request(Method::GET, open)).await;
        assert_eq!(r.status(), 200, "{open} must stay open");
    }
    let allowed = http.with_token(TOKEN).get("k").await;
    assert_eq!(allowed.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn unmatched_paths_below_token_routes_ask_for_the_token_before_their_404() {
    let server = TestServer::start_with(|c| c.auth.auth_token = Some(Secret(TOKEN.into()))).await;
    let (anonymous, allowed) = (Http::of(&server), Http::of(&server).with_token(TOKEN));
    let status = async |http: &Http, method: Method, path: &str| {
        send(http.request(method, path)).await.status().as_u16()
    };
    for path in ["/keys/a/b", "/admin", "/admin/", "/admin/nothing"] {
        assert_eq!(status(&anonymous, Method::GET, path).await, 401, "{path}");
        assert_eq!(status(&allowed, Method::GET, path).await, 404, "{path}");
    }
    // A wrong method on a token route is refused for the token first.
    assert_eq!(status(&anonymous, Method::POST, "/keys/k").await, 401);
    assert_eq!(status(&allowed, Method::POST, "/keys/k").await, 405);
    // Below a single open or token route, and beside the areas, nothing asks for it.
    for path in [
        "/metrics/x",
        "/healthz/x",
        "/keysx",
        "/",
        "/docs/nothing.js",
    ] {
        assert_eq!(status(&anonymous, Method::GET, path).await, 404, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn token_file_is_read_with_its_trailing_newline_removed() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write token");
    let server = TestServer::start_with(|c| c.auth.auth_token_file = Some(file.clone())).await;
    let http = Http::of(&server);
    assert_eq!(put(&http, None).await, 401);
    assert_eq!(put(&http, Some(TOKEN)).await, 201);
    server.stop().await;
}

#[test]
fn config_debug_output_never_shows_the_token() {
    let config = tidemark::config::ServeConfig {
        auth: tidemark::config::AuthToken {
            auth_token: Some(Secret(TOKEN.into())),
            auth_token_file: None,
        },
        ..Default::default()
    };
    assert!(!format!("{config:?}").contains(TOKEN));
}

#[tokio::test]
async fn cors_is_off_by_default_and_allows_only_configured_origins() {
    let client = reqwest::Client::new();
    let preflight = |server: &TestServer, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, server.url("/keys/k"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "PUT")
            .header("Access-Control-Request-Headers", "x-write-timestamp")
            .send()
    };
    let plain = TestServer::start().await;
    let r = preflight(&plain, "https://app.example")
        .await
        .expect("preflight");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    plain.stop().await;

    let server =
        TestServer::start_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    let r = preflight(&server, "https://app.example")
        .await
        .expect("preflight");
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed_headers = r.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    assert!(allowed_headers.contains("x-write-timestamp"));
    let r = preflight(&server, "https://evil.example")
        .await
        .expect("preflight");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    server.stop().await;
}

#[tokio::test]
async fn metrics_can_move_to_their_own_address() {
    let server = TestServer::start_with(|c| {
        c.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let metrics_addr = server
        .running
        .as_ref()
        .and_then(|r| r.metrics_addr)
        .expect("metrics address bound");
    let client = reqwest::Client::new();
    let on_api = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(on_api.status(), 404);
    let own = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(own.status(), 200);
    assert!(own.text().await.expect("body").contains("tidemark_"));
    server.stop().await;
}

#[tokio::test]
async fn slow_header_senders_are_disconnected_after_the_header_read_timeout() {
    let server =
        TestServer::start_with(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut slow = TcpStream::connect(server.http).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial headers");
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {} // a 408 may be sent before the close
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(
        closed,
        "a client that never finishes its headers must be cut off"
    );
    // Meanwhile other clients are served.
    let ok = reqwest::get(server.url("/healthz")).await.expect("healthz");
    assert_eq!(ok.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_on_accept() {
    let server = TestServer::start_with(|c| c.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(server.http).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.expect("reply");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut extra = TcpStream::connect(server.http).await.expect("connect");
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("closed promptly")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection over the cap gets no answer");
    drop(held);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_reports_not_ready_during_the_drain_delay_and_keeps_serving() {
    let mut server = TestServer::start_with(|c| c.drain_delay = Duration::from_millis(600)).await;
    let running = server.running.take().expect("running");
    let url = server.url("/readyz");
    let keys = server.url("/keys/k");
    let stopping = tokio::spawn(running.shutdown());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let client = reqwest::Client::new();
    let ready = client
        .get(&url)
        .send()
        .await
        .expect("readyz while draining");
    assert_eq!(ready.status(), 503);
    let put = client
        .put(&keys)
        .header("X-Write-Timestamp", common::T0.to_string())
        .body("during drain")
        .send()
        .await
        .expect("requests are still served while draining");
    assert_eq!(put.status(), 201);
    stopping
        .await
        .expect("join")
        .expect("clean shutdown after the drain");
    assert!(
        client.get(&url).send().await.is_err(),
        "listeners stop after the drain delay"
    );
}

#[tokio::test]
async fn healthcheck_command_exits_zero_for_a_healthy_server_and_nonzero_otherwise() {
    let server = TestServer::start().await;
    let bin = env!("CARGO_BIN_EXE_tidemark");
    let addr = server.http.to_string();
    let status = tokio::process::Command::new(bin)
        .args(["healthcheck", "--http-addr", &addr])
        .status()
        .await
        .expect("run healthcheck");
    assert!(status.success());
    // A wildcard address is probed on loopback, as inside a container.
    let wildcard = format!("0.0.0.0:{}", server.http.port());
    let status = tokio::process::Command::new(bin)
        .args(["healthcheck", "--http-addr", &wildcard])
        .status()
        .await
        .expect("run healthcheck");
    assert!(status.success());
    server.stop().await;
    let status = tokio::process::Command::new(bin)
        .args(["healthcheck", "--http-addr", &addr, "--timeout", "500ms"])
        .status()
        .await
        .expect("run healthcheck");
    assert!(!status.success());
}

/// Send a Tyrant `rnum` and report whether an answer came back before a close.
/// `tidemark bench --json` against `addr`, bounded by --max-ops and --duration.
async fn bench(target: &str, addr: &str, op: &str, extra: &[&str]) -> serde_json::Value {
    let bounds = "--connections 2 --keys 50 --warmup 0s --duration 5s --max-ops 200 --json";
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["bench", "--target", target, "--addr", addr, "--op", op])
        .args(bounds.split(' '))
        .args(extra)
        .output()
        .await
        .expect("run tidemark bench");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    serde_json::from_str(&stdout).expect("bench prints one JSON report")
}

#[tokio::test]
async fn bench_subcommand_drives_both_front_doors_and_reports_what_it_measured() {
    // The bench stamps its writes with the real clock; the test server's clock is a
    // manual one far behind it, so the future-skew refusal is off here.
    let server = TestServer::start_with(|c| c.limits.max_future_skew = Duration::ZERO).await;
    let tyrant = server.tyrant.to_string();
    let http = server.http.to_string();

    let puts = bench("tyrant", &tyrant, "guarded-put", &[]).await;
    assert_eq!(puts["ops"], 200, "{puts}");
    assert_eq!(puts["error"], 0, "{puts}");
    assert_eq!(puts["operation"], "guarded-put (ext tsput)");

    let gets = bench("tidemark-http", &http, "get", &["--prefill"]).await;
    assert_eq!(gets["prefill"]["ok"], 50, "{gets}");
    assert_eq!(gets["ok"], 200, "every key was prefilled: {gets}");
    assert_eq!(gets["miss"], 0, "{gets}");

    // An operation the target does not have is refused before any load is sent.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args([
            "bench",
            "--target",
            "tidemark-http",
            "--addr",
            &http,
            "--op",
            "set",
        ])
        .output()
        .await
        .expect("run tidemark bench");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not available"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}

async fn tyrant_answers(stream: &mut TcpStream) -> bool {
    if stream.write_all(&[0xC8, 0x80]).await.is_err() {
        return false;
    }
    let mut reply = [0u8; 9];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut reply)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn tyrant_port_admits_only_allowed_networks() {
    let denied = TestServer::start_with(|c| {
        c.tyrant_allow = vec!["10.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let mut s = TcpStream::connect(denied.tyrant).await.expect("connect");
    assert!(!tyrant_answers(&mut s).await, "127.0.0.1 is not in 10/8");
    denied.stop().await;

    let allowed = TestServer::start_with(|c| {
        c.tyrant_allow = vec![
            "10.0.0.0/8".parse().expect("cidr"),
            "127.0.0.0/8".parse().expect("cidr"),
        ];
    })
    .await;
    let mut s = TcpStream::connect(allowed.tyrant).await.expect("connect");
    assert!(tyrant_answers(&mut s).await);
    allowed.stop().await;
}

#[tokio::test]
async fn tyrant_connections_beyond_the_cap_are_closed_on_accept() {
    let server = TestServer::start_with(|c| c.tyrant_max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(server.tyrant).await.expect("connect");
        assert!(tyrant_answers(&mut s).await);
        held.push(s);
    }
    let mut extra = TcpStream::connect(server.tyrant).await.expect("connect");
    assert!(!tyrant_answers(&mut extra).await);
    drop(held);
    // Capacity frees up once connections close.
    let mut later = None;
    for _ in 0..50 {
        let mut s = TcpStream::connect(server.tyrant).await.expect("connect");
        if tyrant_answers(&mut s).await {
            later = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(later.is_some(), "a slot frees when a client leaves");
    server.stop().await;
}

#[tokio::test]
async fn requests_slower_than_the_request_timeout_get_503_problem() {
    let server = TestServer::start_with(|c| c.request_timeout = Duration::from_millis(300)).await;
    let mut s = TcpStream::connect(server.http).await.expect("connect");
    // Headers complete, body promised but never sent: the handler waits on the body.
    s.write_all(
        format!(
            "PUT /keys/slow HTTP/1.1\r\nHost: x\r\nX-Write-Timestamp: {}\r\nContent-Length: 10\r\n\r\nab",
            common::T0
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("answered before the test gives up")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    server.stop().await;
}

#[test]
fn worker_threads_default_to_one_per_cpu_and_zero_is_refused() {
    use clap::Parser;
    let serve = |args: &[&str]| {
        let argv = ["tidemark", "serve"].iter().chain(args).copied();
        tidemark::config::Cli::try_parse_from(argv).map(|cli| match cli.command {
            tidemark::config::Command::Serve(config) => config.worker_threads,
            _ => panic!("parsed as another subcommand"),
        })
    };
    assert_eq!(serve(&[]).expect("no flag"), None);
    assert_eq!(serve(&["--worker-threads", "1"]).expect("one"), Some(1));
    assert!(serve(&["--worker-threads", "0"]).is_err());
}

#[tokio::test]
async fn the_served_document_describes_the_token_exactly_as_the_server_is_configured() {
    let checked_in = tidemark::http::openapi::document();
    let with_token =
        TestServer::start_with(|c| c.auth.auth_token = Some(Secret(TOKEN.into()))).await;
    let served = send(Http::of(&with_token).request(Method::GET, "/openapi.json")).await;
    assert_eq!(served.text().await.expect("document"), checked_in);
    with_token.stop().await;

    let open = TestServer::start().await;
    let served = send(Http::of(&open).request(Method::GET, "/openapi.json")).await;
    let doc: serde_json::Value =
        serde_json::from_str(&served.text().await.expect("document")).expect("JSON");
    assert!(
        doc["components"]["securitySchemes"]
            .as_object()
            .is_none_or(|schemes| schemes.is_empty())
    );
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            assert!(operation["security"].is_null(), "{method} {path}");
            assert!(operation["responses"]["401"].is_null(), "{method} {path}");
        }
    }
    open.stop().await;
}
