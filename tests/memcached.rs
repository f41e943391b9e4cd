//! The memcached port (`--memcached-addr`) over the same service and store as HTTP:
//! every command and error over a raw loopback socket, on whichever engine
//! `TIDEMARK_TEST_ENGINE` names. Time only moves through the server's `ManualClock`.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::Http;
use common::{T0, TestServer};
use tidemark::config::ServeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECOND: u64 = 1_000_000;

async fn server_with(tweak: impl FnOnce(&mut ServeConfig)) -> TestServer {
    TestServer::start_with(|config| {
        config.memcached_addr = Some("127.0.0.1:0".parse().expect("literal address"));
        tweak(config);
    })
    .await
}

async fn server() -> TestServer {
    server_with(|_| {}).await
}

/// One raw connection to the memcached port.
struct Mc {
    socket: TcpStream,
    pending: Vec<u8>,
}

impl Mc {
    async fn connect(server: &TestServer) -> Self {
        Self::to(server.memcached.expect("memcached port configured")).await
    }

    async fn to(addr: SocketAddr) -> Self {
        let socket = TcpStream::connect(addr).await.expect("connects");
        Self {
            socket,
            pending: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.expect("write");
    }

    /// Read until the buffered reply ends with `until`; return all of it.
    async fn read_until(&mut self, until: &str) -> String {
        let read = async {
            while !self.pending.ends_with(until.as_bytes()) {
                let mut chunk = [0u8; 4096];
                let n = self.socket.read(&mut chunk).await.expect("read");
                assert!(
                    n > 0,
                    "closed before {until:?}; got {:?}",
                    String::from_utf8_lossy(&self.pending)
                );
                self.pending.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {until:?} in time; got {:?}",
                    String::from_utf8_lossy(&self.pending)
                )
            });
        String::from_utf8(std::mem::take(&mut self.pending)).expect("utf-8 reply")
    }

    /// Send a request and read its one-line reply.
    async fn line(&mut self, request: &str) -> String {
        self.send(request.as_bytes()).await;
        self.read_until("\r\n").await
    }

    /// Send a retrieval request and read up to its END.
    async fn get(&mut self, request: &str) -> String {
        self.send(request.as_bytes()).await;
        self.read_until("END\r\n").await
    }

    /// The CAS unique `gets` reports for `key`.
    async fn cas_of(&mut self, key: &str) -> u64 {
        let reply = self.get(&format!("gets {key}\r\n")).await;
        let header = reply.lines().next().expect("a VALUE line");
        header
            .split(' ')
            .nth(4)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no cas in {reply:?}"))
    }

    /// Whether the server has closed the connection (EOF within a short wait).
    async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.socket.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

#[tokio::test]
async fn set_then_get_returns_the_value_with_flags_zero() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("set k 0 0 5\r\nhello\r\n").await, "STORED\r\n");
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 0 5\r\nhello\r\nEND\r\n");
    assert_eq!(mc.get("get nope\r\n").await, "END\r\n");
    server.stop().await;
}

#[tokio::test]
async fn get_of_many_keys_answers_the_hits_in_order() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set a 0 0 1\r\n1\r\n").await;
    mc.line("set b 0 0 2\r\n22\r\n").await;
    assert_eq!(
        mc.get("get b missing a\r\n").await,
        "VALUE b 0 2\r\n22\r\nVALUE a 0 1\r\n1\r\nEND\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn add_replace_append_prepend_need_the_right_state() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("replace k 0 0 1\r\nx\r\n").await, "NOT_STORED\r\n");
    assert_eq!(mc.line("append k 0 0 1\r\nx\r\n").await, "NOT_STORED\r\n");
    assert_eq!(mc.line("prepend k 0 0 1\r\nx\r\n").await, "NOT_STORED\r\n");
    assert_eq!(mc.line("add k 0 0 3\r\nmid\r\n").await, "STORED\r\n");
    assert_eq!(mc.line("add k 0 0 1\r\nx\r\n").await, "NOT_STORED\r\n");
    assert_eq!(mc.line("append k 0 0 2\r\n>>\r\n").await, "STORED\r\n");
    assert_eq!(mc.line("prepend k 0 0 2\r\n<<\r\n").await, "STORED\r\n");
    assert_eq!(
        mc.get("get k\r\n").await,
        "VALUE k 0 7\r\n<<mid>>\r\nEND\r\n"
    );
    assert_eq!(mc.line("replace k 0 0 3\r\nnew\r\n").await, "STORED\r\n");
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 0 3\r\nnew\r\nEND\r\n");
    server.stop().await;
}

#[tokio::test]
async fn cas_stores_only_over_the_unique_gets_reported() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("cas k 0 0 1 1\r\nx\r\n").await, "NOT_FOUND\r\n");
    mc.line("set k 0 0 2\r\nv1\r\n").await;
    let first = mc.cas_of("k").await;
    assert_eq!(
        mc.line(&format!("cas k 0 0 2 {}\r\nv2\r\n", first + 1))
            .await,
        "EXISTS\r\n"
    );
    assert_eq!(
        mc.line(&format!("cas k 0 0 2 {first}\r\nv2\r\n")).await,
        "STORED\r\n"
    );
    let second = mc.cas_of("k").await;
    assert_ne!(first, second, "every write gives a new unique");
    assert_eq!(
        mc.line(&format!("cas k 0 0 2 {first}\r\nv3\r\n")).await,
        "EXISTS\r\n"
    );
    // The same content written again still gets a new unique.
    mc.line("set k 0 0 2\r\nv2\r\n").await;
    assert_ne!(mc.cas_of("k").await, second);
    server.stop().await;
}

#[tokio::test]
async fn a_touch_keeps_the_cas_and_an_http_write_changes_it() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 0 0 1\r\nx\r\n").await;
    let before = mc.cas_of("k").await;
    assert_eq!(mc.line("touch k 100\r\n").await, "TOUCHED\r\n");
    assert_eq!(mc.cas_of("k").await, before, "content unchanged");
    let http = Http::of(&server);
    server.clock.advance(SECOND);
    assert!(http.put("k", T0 + SECOND, "y").await.status().is_success());
    let after = mc.cas_of("k").await;
    assert_ne!(after, before, "new content, new unique");
    server.stop().await;
}

#[tokio::test]
async fn delete_removes_and_then_finds_nothing() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 0 0 1\r\nx\r\n").await;
    assert_eq!(mc.line("delete k\r\n").await, "DELETED\r\n");
    assert_eq!(mc.line("delete k\r\n").await, "NOT_FOUND\r\n");
    assert_eq!(mc.get("get k\r\n").await, "END\r\n");
    mc.line("set k 0 0 1\r\nx\r\n").await;
    assert_eq!(mc.line("delete k 0\r\n").await, "DELETED\r\n");
    assert_eq!(
        mc.line("delete k 5\r\n").await,
        "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn incr_and_decr_count_decimal_values() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("incr n 1\r\n").await, "NOT_FOUND\r\n");
    mc.line("set n 0 0 2\r\n10\r\n").await;
    assert_eq!(mc.line("incr n 5\r\n").await, "15\r\n");
    assert_eq!(mc.line("decr n 100\r\n").await, "0\r\n", "decr stops at 0");
    mc.line("set n 0 0 20\r\n18446744073709551615\r\n").await;
    assert_eq!(mc.line("incr n 2\r\n").await, "1\r\n", "incr wraps at 2^64");
    assert_eq!(mc.get("get n\r\n").await, "VALUE n 0 1\r\n1\r\nEND\r\n");
    mc.line("set t 0 0 3\r\nabc\r\n").await;
    assert_eq!(
        mc.line("incr t 1\r\n").await,
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    );
    assert_eq!(
        mc.line("incr n -1\r\n").await,
        "CLIENT_ERROR invalid numeric delta argument\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn exptime_is_relative_seconds_up_to_30_days_then_unix_time() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("set rel 0 10 1\r\nx\r\n").await, "STORED\r\n");
    let unix = T0 / SECOND + 100;
    assert_eq!(
        mc.line(&format!("set abs 0 {unix} 1\r\ny\r\n")).await,
        "STORED\r\n"
    );
    assert_eq!(mc.line("set past 0 2592001 1\r\nz\r\n").await, "STORED\r\n");
    assert_eq!(mc.line("set neg 0 -1 1\r\nz\r\n").await, "STORED\r\n");
    assert_eq!(mc.line("set never 0 0 1\r\nz\r\n").await, "STORED\r\n");
    assert_eq!(
        mc.get("get past neg\r\n").await,
        "END\r\n",
        "already expired"
    );
    server.clock.advance(11 * SECOND);
    assert_eq!(mc.get("get rel\r\n").await, "END\r\n");
    assert_eq!(mc.get("get abs\r\n").await, "VALUE abs 0 1\r\ny\r\nEND\r\n");
    server.clock.advance(100 * SECOND);
    assert_eq!(
        mc.get("get abs never\r\n").await,
        "VALUE never 0 1\r\nz\r\nEND\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn touch_and_gat_move_the_expiry() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("touch k 10\r\n").await, "NOT_FOUND\r\n");
    mc.line("set k 0 10 1\r\nx\r\n").await;
    assert_eq!(mc.line("touch k 100\r\n").await, "TOUCHED\r\n");
    server.clock.advance(50 * SECOND);
    let cas = mc.cas_of("k").await;
    assert_eq!(
        mc.get("gats 20 k missing\r\n").await,
        format!("VALUE k 0 1 {cas}\r\nx\r\nEND\r\n")
    );
    assert_eq!(mc.get("gat 0 k\r\n").await, "VALUE k 0 1\r\nx\r\nEND\r\n");
    server.clock.advance(1000 * SECOND);
    assert_eq!(
        mc.get("get k\r\n").await,
        "VALUE k 0 1\r\nx\r\nEND\r\n",
        "gat 0 = never"
    );
    assert_eq!(mc.line("touch k -1\r\n").await, "TOUCHED\r\n");
    assert_eq!(mc.get("get k\r\n").await, "END\r\n");
    server.stop().await;
}

#[tokio::test]
async fn noreply_suppresses_answers_and_pipelining_keeps_order() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.send(b"set a 0 0 1 noreply\r\n1\r\nincr a 4 noreply\r\ndelete zz noreply\r\ntouch a 0 noreply\r\nget a\r\n")
        .await;
    assert_eq!(
        mc.read_until("END\r\n").await,
        "VALUE a 0 1\r\n5\r\nEND\r\n"
    );
    mc.send(b"set b 0 0 1\r\n2\r\nget b\r\nversion\r\n").await;
    let reply = mc.read_until("\r\n").await;
    assert!(
        reply.starts_with("STORED\r\nVALUE b 0 1\r\n2\r\nEND\r\nVERSION 1.6"),
        "{reply:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn malformed_commands_get_memcached_errors_and_keep_the_connection() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("bogus\r\n").await, "ERROR\r\n");
    assert_eq!(mc.line("get\r\n").await, "ERROR\r\n");
    assert_eq!(mc.line("set k 0 0\r\n").await, "ERROR\r\n");
    assert_eq!(
        mc.line("set k x 0 1\r\n").await,
        "CLIENT_ERROR bad command line format\r\n"
    );
    let long = "k".repeat(251);
    assert_eq!(
        mc.line(&format!("get {long}\r\n")).await,
        "CLIENT_ERROR bad command line format\r\n"
    );
    // As memcached: the block is its length plus two bytes; what follows is a line.
    mc.send(b"set k 0 0 1\r\nxy\r\n").await;
    assert_eq!(
        mc.read_until("ERROR\r\n").await,
        "CLIENT_ERROR bad data chunk\r\nERROR\r\n"
    );
    assert_eq!(
        mc.line("touch k x\r\n").await,
        "CLIENT_ERROR invalid exptime argument\r\n"
    );
    let key = "k".repeat(250);
    assert_eq!(
        mc.line(&format!("set {key} 0 0 1\r\nx\r\n")).await,
        "STORED\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_too_large_value_is_refused_and_its_data_thrown_away() {
    let server = server_with(|config| config.limits.max_value_bytes = 16).await;
    let mut mc = Mc::connect(&server).await;
    let data = "x".repeat(17);
    assert_eq!(
        mc.line(&format!("set k 0 0 17\r\n{data}\r\n")).await,
        "SERVER_ERROR object too large for cache\r\n"
    );
    assert_eq!(mc.get("get k\r\n").await, "END\r\n");
    mc.line("set k 0 0 10\r\n0123456789\r\n").await;
    assert_eq!(
        mc.line("append k 0 0 10\r\n0123456789\r\n").await,
        "SERVER_ERROR out of memory storing object\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn keys_over_a_smaller_max_key_bytes_are_a_bad_command_line() {
    let server = server_with(|config| config.limits.max_key_bytes = 8).await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(
        mc.line("set 123456789 0 0 1\r\nx\r\n").await,
        "CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(
        mc.line("get 123456789\r\n").await,
        "CLIENT_ERROR bad command line format\r\n"
    );
    assert_eq!(mc.line("set 12345678 0 0 1\r\nx\r\n").await, "STORED\r\n");
    server.stop().await;
}

#[tokio::test]
async fn client_flags_are_stored_with_the_value_and_survive_a_restart() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    // The largest 32-bit value, as PHP and pylibmc use the high bits.
    assert_eq!(
        mc.line("set k 4294967295 0 2\r\n10\r\n").await,
        "STORED\r\n"
    );
    assert_eq!(
        mc.get("get k\r\n").await,
        "VALUE k 4294967295 2\r\n10\r\nEND\r\n"
    );
    // append, prepend, incr and touch keep the flags (and ignore their own).
    assert_eq!(mc.line("append k 1 0 1\r\n0\r\n").await, "STORED\r\n");
    assert_eq!(mc.line("prepend k 2 0 1\r\n1\r\n").await, "STORED\r\n");
    assert_eq!(mc.line("incr k 1\r\n").await, "1101\r\n");
    assert_eq!(mc.line("touch k 100\r\n").await, "TOUCHED\r\n");
    assert_eq!(
        mc.get("get k\r\n").await,
        "VALUE k 4294967295 4\r\n1101\r\nEND\r\n"
    );
    // A set takes the flags it is given. 2^32 does not fit: memcached refuses the
    // line and then reads the data block as a command of its own.
    assert_eq!(mc.line("set k 7 0 1\r\nx\r\n").await, "STORED\r\n");
    mc.send(b"set k 4294967296 0 1\r\nx\r\n").await;
    assert_eq!(
        mc.read_until("\r\nERROR\r\n").await,
        "CLIENT_ERROR bad command line format\r\nERROR\r\n"
    );
    assert_eq!(mc.line("set other 0 0 1\r\ny\r\n").await, "STORED\r\n");
    let server = server.restart().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(
        mc.get("gets k other\r\n")
            .await
            .lines()
            .filter(|l| l.starts_with("VALUE"))
            .map(|l| l.rsplit_once(' ').map_or("", |(head, _)| head).to_string())
            .collect::<Vec<_>>(),
        ["VALUE k 7 1", "VALUE other 0 1"]
    );
    // A value written over HTTP has no client flags.
    let http = Http::of(&server);
    assert_eq!(http.put("k", T0 + SECOND, "z").await.status(), 204);
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 0 1\r\nz\r\nEND\r\n");
    server.stop().await;
}

#[tokio::test]
async fn flush_all_is_refused_unless_allowed() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 0 0 1\r\nx\r\n").await;
    assert_eq!(
        mc.line("flush_all\r\n").await,
        "CLIENT_ERROR flush_all not allowed\r\n"
    );
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 0 1\r\nx\r\nEND\r\n");
    server.stop().await;

    let server = server_with(|config| config.memcached_allow_flush = true).await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 0 0 1\r\nx\r\n").await;
    assert_eq!(mc.line("flush_all\r\n").await, "OK\r\n");
    assert_eq!(mc.get("get k\r\n").await, "END\r\n");
    server.stop().await;
}

#[tokio::test]
async fn stats_version_verbosity_and_quit() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.get("get a b\r\n").await;
    let stats = mc.get("stats\r\n").await;
    assert!(stats.contains("STAT cmd_get 2\r\n"), "{stats}");
    assert!(stats.contains("STAT get_misses 2\r\n"), "{stats}");
    assert!(stats.contains("STAT curr_connections 1\r\n"), "{stats}");
    assert!(mc.line("version\r\n").await.starts_with("VERSION 1.6"));
    assert_eq!(mc.line("verbosity 1\r\n").await, "OK\r\n");
    mc.send(b"quit\r\n").await;
    assert!(mc.is_closed().await);
    server.stop().await;
}

#[tokio::test]
async fn a_line_over_the_limit_closes_the_connection() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.send(&vec![b'g'; 70_000]).await;
    assert_eq!(
        mc.read_until("\r\n").await,
        "CLIENT_ERROR line too long\r\n"
    );
    assert!(mc.is_closed().await);
    server.stop().await;
}

#[tokio::test]
async fn http_and_memcached_see_the_same_values() {
    let server = server().await;
    let http = Http::of(&server);
    assert!(http.put("web", T0, "from-http").await.status().is_success());
    let mut mc = Mc::connect(&server).await;
    assert_eq!(
        mc.get("get web\r\n").await,
        "VALUE web 0 9\r\nfrom-http\r\nEND\r\n"
    );
    mc.line("set cache 0 0 2\r\nmc\r\n").await;
    let (status, _, body) = http.read("cache").await;
    assert_eq!((status, body.as_slice()), (200, b"mc".as_slice()));
    // An unguarded memcached write is stamped with the server clock, so a guarded
    // HTTP write older than it is refused.
    let older = http.put("cache", T0 - SECOND, "old").await;
    assert_eq!(older.status().as_u16(), 409);
    server.stop().await;
}

#[tokio::test]
async fn under_the_prefix_guard_set_add_replace_follow_the_timestamp_rule() {
    let server = server_with(|config| {
        config.memcached_guard = tidemark::config::TyrantGuard::Prefix;
    })
    .await;
    let mut mc = Mc::connect(&server).await;
    let ts = |t: u64, rest: &str| format!("{t:016}{rest}");
    let set = |key: &str, value: &str| format!("set {key} 0 0 {}\r\n{value}\r\n", value.len());
    let newer = ts(T0, "b");
    let older = ts(T0 - SECOND, "a");
    assert_eq!(mc.line(&set("k", &newer)).await, "STORED\r\n");
    assert_eq!(mc.line(&set("k", &older)).await, "NOT_STORED\r\n", "stale");
    assert_eq!(
        mc.line(&set("k", &newer)).await,
        "STORED\r\n",
        "the same write repeated"
    );
    assert_eq!(mc.line(&set("k", "no digits")).await, "NOT_STORED\r\n");
    assert_eq!(
        mc.get("get k\r\n").await,
        format!("VALUE k 0 {}\r\n{newer}\r\nEND\r\n", newer.len())
    );
    let later = ts(T0 + SECOND, "c");
    assert_eq!(
        mc.line(&format!("add k 0 0 {}\r\n{later}\r\n", later.len()))
            .await,
        "NOT_STORED\r\n"
    );
    assert_eq!(
        mc.line(&format!("replace nope 0 0 {}\r\n{later}\r\n", later.len()))
            .await,
        "NOT_STORED\r\n"
    );
    assert_eq!(
        mc.line(&format!("replace k 0 10 {}\r\n{later}\r\n", later.len()))
            .await,
        "STORED\r\n"
    );
    assert_eq!(
        mc.line(&format!(
            "set k 0 -1 {}\r\n{}\r\n",
            later.len(),
            ts(T0 + 2 * SECOND, "d")
        ))
        .await,
        "NOT_STORED\r\n",
        "an exptime already past is not stored under the guard"
    );
    // HTTP writes are guarded against the same timestamps.
    let http = Http::of(&server);
    assert_eq!(http.put("k", T0, "old").await.status().as_u16(), 409);
    server.clock.advance(11 * SECOND);
    assert_eq!(
        mc.get("get k\r\n").await,
        "END\r\n",
        "replace's exptime held"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_port_is_off_unless_configured() {
    let server = TestServer::start().await;
    assert!(server.memcached.is_none());
    server.stop().await;
}

/// rust-memcache (the `memcache` crate, an independent maintained client) over the
/// ASCII protocol: its blocking calls run off the async threads.
#[tokio::test]
async fn an_independent_client_round_trips_every_classic_command() {
    let server = server().await;
    let addr = server.memcached.expect("memcached port configured");
    tokio::task::spawn_blocking(move || {
        let url = format!("memcache://{addr}?protocol=ascii&timeout=10");
        let client = memcache::Client::connect(url.as_str()).expect("client connects");

        client.set("k", "v1", 0).expect("set");
        assert_eq!(client.get::<String>("k").expect("get"), Some("v1".into()));
        let (value, flags, _): (String, u32, Option<u64>) =
            client.get("k").expect("get").expect("a value");
        assert_eq!((value.as_str(), flags), ("v1", 0), "flags 0 come back");

        client.add("k", "ignored", 0).expect("add answers");
        assert_eq!(client.get::<String>("k").expect("get"), Some("v1".into()));
        client.add("fresh", "a", 0).expect("add");
        assert_eq!(
            client.get::<String>("fresh").expect("get"),
            Some("a".into())
        );

        client.replace("k", "v2", 0).expect("replace");
        client.replace("missing", "x", 0).expect("replace answers");
        assert_eq!(client.get::<String>("missing").expect("get"), None);
        client.append("k", "+").expect("append");
        client.prepend("k", "-").expect("prepend");
        assert_eq!(client.get::<String>("k").expect("get"), Some("-v2+".into()));

        let found: std::collections::HashMap<String, (String, u32, Option<u64>)> =
            client.gets(&["k"]).expect("gets");
        let cas = found["k"].2.expect("gets carries a cas");
        assert!(client.cas("k", "v3", 0, cas).expect("cas"));
        assert!(
            !client.cas("k", "v4", 0, cas).expect("cas"),
            "a stale cas is EXISTS"
        );
        assert_eq!(client.get::<String>("k").expect("get"), Some("v3".into()));

        client.set("n", 41u64, 0).expect("set a number");
        assert_eq!(client.increment("n", 2).expect("incr"), 43);
        assert_eq!(client.decrement("n", 50).expect("decr"), 0);

        assert!(client.touch("k", 100).expect("touch"));
        assert!(!client.touch("missing", 100).expect("touch"));
        assert!(client.delete("k").expect("delete"));
        assert!(!client.delete("k").expect("delete"));
        assert_eq!(client.get::<String>("k").expect("get"), None);
        assert!(!client.version().expect("version").is_empty());
    })
    .await
    .expect("client thread");
    server.stop().await;
}

// ---- meta commands (mg ms md ma me mn) ----

impl Mc {
    /// Send a request and read its answer, which ends with `last` (a line of its own
    /// or the end of a value line).
    async fn meta(&mut self, request: &str, last: &str) -> String {
        self.send(request.as_bytes()).await;
        self.read_until(last).await
    }
}

#[tokio::test]
async fn mg_answers_the_requested_flags_in_request_order() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 5 100 5\r\nhello\r\n").await;
    let cas = mc.cas_of("k").await;
    assert_eq!(
        mc.meta("mg k s v t f c k Oab\r\n", "hello\r\n").await,
        format!("VA 5 s5 t100 f5 c{cas} kk Oab\r\nhello\r\n")
    );
    assert_eq!(mc.line("mg k\r\n").await, "HD\r\n", "a hit without v");
    assert_eq!(mc.line("mg k Oz k f\r\n").await, "HD Oz kk f5\r\n");
    mc.line("set forever 0 0 1\r\nx\r\n").await;
    assert_eq!(mc.line("mg forever t\r\n").await, "HD t-1\r\n");
    assert_eq!(mc.line("mg nope v\r\n").await, "EN\r\n");
    assert_eq!(
        mc.line("mg nope v k O1 s\r\n").await,
        "EN knope O1\r\n",
        "a miss echoes only k and O"
    );
    server.stop().await;
}

#[tokio::test]
async fn mg_with_t_touches_and_counts_as_a_touch() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 0 0 1\r\nx\r\n").await;
    let cas = mc.cas_of("k").await;
    assert_eq!(
        mc.line("mg k T10 t c\r\n").await,
        format!("HD t10 c{cas}\r\n")
    );
    server.clock.advance(11 * SECOND);
    assert_eq!(mc.line("mg k v\r\n").await, "EN\r\n");
    let stats = mc.get("stats\r\n").await;
    assert!(stats.contains("STAT cmd_touch 1\r\n"), "{stats}");
    assert!(stats.contains("STAT get_misses 1\r\n"), "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn quiet_mode_hides_the_uninteresting_answers_until_mn() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    // As Dalli 3 pipelines a multi-get and a multi-set: q on each, mn to end.
    let answer = mc
        .meta(
            "ms a 1 c q MS\r\n1\r\nms b 2 q MS T0\r\n22\r\nms a 1 q ME\r\nx\r\nmn\r\n",
            "MN\r\n",
        )
        .await;
    assert_eq!(answer, "NS\r\nMN\r\n", "only the failed add answers");
    let answer = mc
        .meta(
            "mg a v f q k\r\nmg nope v f q k\r\nmg b v f q k\r\nmn\r\n",
            "MN\r\n",
        )
        .await;
    assert_eq!(answer, "VA 1 f0 ka\r\n1\r\nVA 2 f0 kb\r\n22\r\nMN\r\n");
    let answer = mc
        .meta("md a q\r\nmd nope q\r\nma c q\r\nmn\r\n", "MN\r\n")
        .await;
    assert_eq!(
        answer, "NF\r\nNF\r\nMN\r\n",
        "misses of md and ma still answer"
    );
    assert_eq!(mc.line("mn\r\n").await, "MN\r\n");
    server.stop().await;
}

#[tokio::test]
async fn ms_modes_follow_set_add_replace_append_prepend() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("ms k 1 MR\r\nx\r\n").await, "NS\r\n");
    assert_eq!(mc.line("ms k 1 MA\r\nx\r\n").await, "NS\r\n");
    assert_eq!(mc.line("ms k 3 ME\r\nmid\r\n").await, "HD\r\n");
    assert_eq!(mc.line("ms k 1 ME\r\nx\r\n").await, "NS\r\n");
    assert_eq!(mc.line("ms k 2 MA\r\n>>\r\n").await, "HD\r\n");
    assert_eq!(mc.line("ms k 2 MP\r\n<<\r\n").await, "HD\r\n");
    assert_eq!(
        mc.get("get k\r\n").await,
        "VALUE k 0 7\r\n<<mid>>\r\nEND\r\n"
    );
    assert_eq!(mc.line("ms k 3 MR F9 T50\r\nnew\r\n").await, "HD\r\n");
    assert_eq!(
        mc.meta("mg k v f t\r\n", "new\r\n").await,
        "VA 3 f9 t50\r\nnew\r\n"
    );
    assert_eq!(mc.line("ms k 1 MS Oo k\r\ns\r\n").await, "HD Oo kk\r\n");
    assert_eq!(
        mc.line("ms k 0\r\n\r\n").await,
        "HD\r\n",
        "default mode is set"
    );
    // N in append mode creates the item on a miss, with N's exptime.
    assert_eq!(mc.line("ms log 2 MA N30\r\nab\r\n").await, "HD\r\n");
    assert_eq!(mc.line("ms log 2 MA N30\r\ncd\r\n").await, "HD\r\n");
    assert_eq!(
        mc.meta("mg log v t\r\n", "abcd\r\n").await,
        "VA 4 t30\r\nabcd\r\n"
    );
    let stats = mc.get("stats\r\n").await;
    assert!(stats.contains("STAT cmd_set 11\r\n"), "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn ms_compares_and_returns_cas_uniques() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("ms k 1 C1\r\nx\r\n").await, "NF\r\n");
    let first = mc.line("ms k 2 c\r\nv1\r\n").await;
    let cas: u64 = first
        .trim_end()
        .strip_prefix("HD c")
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no cas in {first:?}"));
    assert_eq!(mc.cas_of("k").await, cas, "c is the stored value's unique");
    assert_eq!(
        mc.line(&format!("ms k 2 C{}\r\nv2\r\n", cas + 1)).await,
        "EX\r\n"
    );
    assert_eq!(
        mc.line(&format!("ms k 2 MA C{}\r\nv2\r\n", cas + 1)).await,
        "EX\r\n",
        "append compares too"
    );
    let second = mc.line(&format!("ms k 2 C{cas} c\r\nv2\r\n")).await;
    assert!(second.starts_with("HD c"), "{second}");
    assert_ne!(second, first);
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 0 2\r\nv2\r\nEND\r\n");
    server.stop().await;
}

#[tokio::test]
async fn ms_errors_swallow_the_data_and_keep_the_connection() {
    let server = server_with(|config| config.limits.max_value_bytes = 16).await;
    let mut mc = Mc::connect(&server).await;
    let cases = [
        (
            "ms k 3 MX\r\nabc\r\n",
            "CLIENT_ERROR invalid mode for ms M token",
        ),
        (
            "ms k 3 MSS\r\nabc\r\n",
            "CLIENT_ERROR incorrect length for M token",
        ),
        ("ms k 3 T1 T2\r\nabc\r\n", "CLIENT_ERROR duplicate flag"),
        ("ms k 3 !\r\nabc\r\n", "CLIENT_ERROR invalid flag"),
        (
            "ms k 3 Fx\r\nabc\r\n",
            "CLIENT_ERROR bad command line format",
        ),
        ("ms k 3 I\r\nabc\r\n", "CLIENT_ERROR invalid flag"),
        ("ms k 3 E5\r\nabc\r\n", "CLIENT_ERROR invalid flag"),
        (
            "ms k 3 q MX\r\nabc\r\n",
            "CLIENT_ERROR invalid mode for ms M token",
        ),
        (
            "ms k 17\r\n01234567890123456\r\n",
            "SERVER_ERROR object too large for cache",
        ),
        ("ms k 3\r\nabcde", "CLIENT_ERROR bad data chunk"),
        ("ms k\r\n", "CLIENT_ERROR bad command line format"),
        ("ms k x\r\n", "CLIENT_ERROR bad command line format"),
    ];
    for (request, reply) in cases {
        assert_eq!(
            mc.line(request).await,
            format!("{reply}\r\n"),
            "{request:?}"
        );
        assert_eq!(mc.line("mn\r\n").await, "MN\r\n", "after {request:?}");
    }
    assert_eq!(mc.line("mg k\r\n").await, "EN\r\n", "nothing was stored");
    mc.line("ms k 10\r\n0123456789\r\n").await;
    assert_eq!(
        mc.line("ms k 10 MA\r\n0123456789\r\n").await,
        "SERVER_ERROR out of memory storing object\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn md_deletes_compares_empties_and_echoes() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("md k\r\n").await, "NF\r\n");
    mc.line("set k 7 0 5\r\nhello\r\n").await;
    let cas = mc.cas_of("k").await;
    assert_eq!(mc.line(&format!("md k C{}\r\n", cas + 1)).await, "EX\r\n");
    assert_eq!(mc.line("md k x Oq k\r\n").await, "HD Oq kk\r\n");
    assert_eq!(
        mc.meta("mg k v s f\r\n", "\r\n\r\n").await,
        "VA 0 s0 f0\r\n\r\n",
        "x empties the value and its flags, and keeps the item"
    );
    let cas = mc.cas_of("k").await;
    assert_eq!(mc.line(&format!("md k C{cas} T30\r\n")).await, "HD\r\n");
    assert_eq!(mc.get("get k\r\n").await, "END\r\n");
    assert_eq!(
        mc.line("md k h\r\n").await,
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(
        mc.line("md k q q\r\n").await,
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn ma_counts_vivifies_and_compares() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("ma n\r\n").await, "NF\r\n");
    assert_eq!(mc.line("ma n O1 k\r\n").await, "NF O1 kn\r\n");
    // As Dalli 3 sends incr with an initial value.
    assert_eq!(
        mc.meta("ma n v N0 J10 MI\r\n", "10\r\n").await,
        "VA 2\r\n10\r\n"
    );
    assert_eq!(mc.meta("ma n v\r\n", "11\r\n").await, "VA 2\r\n11\r\n");
    assert_eq!(
        mc.meta("ma n v MD D5 t\r\n", "6\r\n").await,
        "VA 1 t-1\r\n6\r\n"
    );
    assert_eq!(
        mc.meta("ma n v M- D100\r\n", "0\r\n").await,
        "VA 1\r\n0\r\n"
    );
    assert_eq!(mc.line("ma n M+ D7\r\n").await, "HD\r\n");
    assert_eq!(mc.get("get n\r\n").await, "VALUE n 0 1\r\n7\r\nEND\r\n");
    let cas = mc.cas_of("n").await;
    assert_eq!(mc.line(&format!("ma n C{}\r\n", cas + 1)).await, "EX\r\n");
    let answer = mc.line(&format!("ma n C{cas} c T20 t\r\n")).await;
    let new_cas = mc.cas_of("n").await;
    assert_eq!(answer, format!("HD c{new_cas} t20\r\n"));
    assert_ne!(new_cas, cas);
    assert_eq!(
        mc.meta("ma n q\r\nmn\r\n", "MN\r\n").await,
        "MN\r\n",
        "q hides the success"
    );
    mc.line("set word 0 0 3\r\nabc\r\n").await;
    assert_eq!(
        mc.line("ma word\r\n").await,
        "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    );
    assert_eq!(
        mc.line("ma n MX\r\n").await,
        "CLIENT_ERROR invalid mode for ma M token\r\n"
    );
    assert_eq!(
        mc.line("ma n Dx\r\n").await,
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn base64_keys_are_decoded_and_answered_in_base64() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    // "foo bar" (a space: only a base64 key can hold it) and "foo".
    assert_eq!(mc.line("ms Zm9vIGJhcg== 2 b\r\nhi\r\n").await, "HD\r\n");
    assert_eq!(
        mc.meta("mg Zm9vIGJhcg== b v k\r\n", "hi\r\n").await,
        "VA 2 kZm9vIGJhcg== b\r\nhi\r\n"
    );
    assert_eq!(mc.line("ms Zm9v 1 b k\r\nx\r\n").await, "HD kZm9v b\r\n");
    assert_eq!(mc.get("get foo\r\n").await, "VALUE foo 0 1\r\nx\r\nEND\r\n");
    assert_eq!(
        mc.line("me Zm9v b\r\n").await.split(' ').nth(1),
        Some("Zm9v")
    );
    assert_eq!(mc.line("md Zm9v b q\r\nmn\r\n").await, "MN\r\n");
    assert_eq!(mc.get("get foo\r\n").await, "END\r\n");
    assert_eq!(
        mc.line("mg !!!! b v\r\n").await,
        "CLIENT_ERROR error decoding key\r\n"
    );
    assert_eq!(
        mc.line("ma !!!! b\r\n").await,
        "CLIENT_ERROR invalid or duplicate flag\r\n"
    );
    assert_eq!(
        mc.line("me !!!! b\r\n").await,
        "CLIENT_ERROR bad command line format\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn meta_flag_errors_are_memcacheds_and_keep_the_connection() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    let long_key = "k".repeat(251);
    let opaque = format!("O{}", "x".repeat(32));
    let many = "k ".repeat(18);
    let cases = [
        ("mg k v v\r\n".to_string(), "CLIENT_ERROR duplicate flag"),
        ("mg k !\r\n".to_string(), "CLIENT_ERROR invalid flag"),
        (
            "mg k Tx\r\n".to_string(),
            "CLIENT_ERROR bad token in command line format",
        ),
        (
            format!("mg k {opaque}\r\n"),
            "CLIENT_ERROR opaque token too long",
        ),
        (
            format!("mg {long_key} v\r\n"),
            "CLIENT_ERROR bad command line format",
        ),
        (
            format!("mg k {many}\r\n"),
            "CLIENT_ERROR options flags are too long",
        ),
        (
            format!("md k {many}\r\n"),
            "CLIENT_ERROR options flags too long",
        ),
        // Flags tidemark does not keep the state for are refused as unknown ones.
        ("mg k h\r\n".to_string(), "CLIENT_ERROR invalid flag"),
        ("mg k l\r\n".to_string(), "CLIENT_ERROR invalid flag"),
        ("mg k N30\r\n".to_string(), "CLIENT_ERROR invalid flag"),
        ("mg k R30\r\n".to_string(), "CLIENT_ERROR invalid flag"),
        ("mg k E5\r\n".to_string(), "CLIENT_ERROR invalid flag"),
        (
            "md k I\r\n".to_string(),
            "CLIENT_ERROR invalid or duplicate flag",
        ),
        ("mg\r\n".to_string(), "ERROR"),
        ("mz k\r\n".to_string(), "ERROR"),
        ("me\r\n".to_string(), "CLIENT_ERROR bad command line format"),
    ];
    for (request, reply) in &cases {
        assert_eq!(
            mc.line(request).await,
            format!("{reply}\r\n"),
            "{request:?}"
        );
    }
    // Errors are answered even in quiet mode.
    assert_eq!(
        mc.line("mg k q v v\r\n").await,
        "CLIENT_ERROR duplicate flag\r\n"
    );
    assert_eq!(mc.line("mn\r\n").await, "MN\r\n");
    server.stop().await;
}

#[tokio::test]
async fn me_answers_the_debug_values_tidemark_has() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("me k\r\n").await, "EN\r\n");
    mc.line("set k 0 30 5\r\nhello\r\n").await;
    let cas = mc.cas_of("k").await;
    assert_eq!(
        mc.line("me k\r\n").await,
        format!("ME k exp=30 cas={cas} size=5\r\n")
    );
    mc.line("set k 0 0 1\r\nx\r\n").await;
    assert!(mc.line("me k\r\n").await.starts_with("ME k exp=-1 cas="));
    server.stop().await;
}

#[tokio::test]
async fn meta_writes_and_classic_reads_share_the_same_items() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    assert_eq!(mc.line("ms k 5 F3 T100\r\nhello\r\n").await, "HD\r\n");
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 3 5\r\nhello\r\nEND\r\n");
    let http = Http::of(&server);
    let body = http.get("k").await.text().await.expect("body");
    assert_eq!(body, "hello");
    assert_eq!(mc.line("set k 0 0 2\r\nhi\r\n").await, "STORED\r\n");
    assert_eq!(mc.meta("mg k v f\r\n", "hi\r\n").await, "VA 2 f0\r\nhi\r\n");
    server.stop().await;
}

#[tokio::test]
async fn under_the_prefix_guard_ms_set_add_replace_follow_the_timestamp_rule() {
    let server = server_with(|config| {
        config.memcached_guard = tidemark::config::TyrantGuard::Prefix;
    })
    .await;
    let mut mc = Mc::connect(&server).await;
    let ts = |t: u64, rest: &str| format!("{t:016}{rest}");
    let ms = |key: &str, flags: &str, value: &str| {
        format!("ms {key} {} {flags}\r\n{value}\r\n", value.len())
    };
    let newer = ts(T0, "b");
    let older = ts(T0 - SECOND, "a");
    let first = mc.line(&ms("k", "c", &newer)).await;
    assert_eq!(first, format!("HD c{}\r\n", mc.cas_of("k").await));
    assert_eq!(mc.line(&ms("k", "MS", &older)).await, "NS\r\n", "stale");
    assert_eq!(mc.line(&ms("k", "", "no digits")).await, "NS\r\n");
    assert_eq!(mc.line(&ms("k", "", &newer)).await, "HD\r\n", "repeated");
    let later = ts(T0 + SECOND, "c");
    assert_eq!(mc.line(&ms("k", "ME", &later)).await, "NS\r\n");
    assert_eq!(mc.line(&ms("nope", "MR", &later)).await, "NS\r\n");
    server.clock.advance(2 * SECOND);
    assert_eq!(mc.line(&ms("k", "MR", &later)).await, "HD\r\n");
    // Append mode carries no timestamp and stays unguarded.
    assert_eq!(mc.line(&ms("k", "MA", "!")).await, "HD\r\n");
    assert_eq!(
        mc.get("get k\r\n").await,
        format!("VALUE k 0 {}\r\n{later}!\r\nEND\r\n", later.len() + 1)
    );
    server.stop().await;
}

#[tokio::test]
async fn stats_arguments_answer_settings_reset_and_memcacheds_empty_lists() {
    let server = server_with(|config| {
        config.limits.max_value_bytes = 4096;
        config.memcached_allow_flush = true;
    })
    .await;
    let port = server.memcached.expect("memcached port").port();
    let mut mc = Mc::connect(&server).await;
    let settings = mc.get("stats settings\r\n").await;
    for line in [
        "STAT item_size_max 4096\r\n".to_string(),
        format!("STAT tcpport {port}\r\n"),
        "STAT flush_enabled yes\r\n".to_string(),
        "STAT cas_enabled yes\r\n".to_string(),
        "STAT evictions off\r\n".to_string(),
    ] {
        assert!(settings.contains(&line), "{line:?} in {settings}");
    }
    assert!(settings.contains("STAT maxconns "), "{settings}");
    mc.line("mg a v\r\n").await;
    mc.line("ms a 1\r\nx\r\n").await;
    let stats = mc.get("stats\r\n").await;
    assert!(stats.contains("STAT cmd_get 1\r\n"), "{stats}");
    assert!(stats.contains("STAT cmd_set 1\r\n"), "{stats}");
    assert_eq!(mc.line("stats reset\r\n").await, "RESET\r\n");
    let stats = mc.get("stats\r\n").await;
    assert!(stats.contains("STAT cmd_get 0\r\n"), "{stats}");
    assert!(stats.contains("STAT cmd_set 0\r\n"), "{stats}");
    assert!(stats.contains("STAT curr_connections 1\r\n"), "{stats}");
    assert_eq!(mc.get("stats items\r\n").await, "END\r\n");
    assert_eq!(mc.get("stats slabs\r\n").await, "END\r\n");
    assert_eq!(
        mc.get("stats sizes\r\n").await,
        "STAT sizes_status disabled\r\nEND\r\n"
    );
    assert_eq!(mc.line("stats conns\r\n").await, "ERROR\r\n");
    assert_eq!(mc.line("stats bogus\r\n").await, "ERROR\r\n");
    assert_eq!(mc.line("mn\r\n").await, "MN\r\n");
    server.stop().await;
}

#[tokio::test]
async fn a_delayed_flush_all_removes_at_its_deadline_what_exists_then() {
    let server = server_with(|config| config.memcached_allow_flush = true).await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set before 0 0 1\r\nx\r\n").await;
    assert_eq!(mc.line("flush_all 10\r\n").await, "OK\r\n");
    assert_eq!(
        mc.get("get before\r\n").await,
        "VALUE before 0 1\r\nx\r\nEND\r\n"
    );
    server.clock.advance(5 * SECOND);
    mc.line("set during 0 0 1\r\ny\r\n").await;
    server.clock.advance(5 * SECOND);
    // The next request runs the due flush first.
    assert_eq!(mc.get("get before during\r\n").await, "END\r\n");
    mc.line("set after 0 0 1\r\nz\r\n").await;
    server.clock.advance(60 * SECOND);
    assert_eq!(
        mc.get("get after\r\n").await,
        "VALUE after 0 1\r\nz\r\nEND\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_delayed_flush_all_runs_without_a_memcached_request_and_a_later_one_replaces_it() {
    let server = server_with(|config| config.memcached_allow_flush = true).await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 0 0 1\r\nx\r\n").await;
    assert_eq!(mc.line("flush_all 10\r\n").await, "OK\r\n");
    assert_eq!(mc.line("flush_all 100 noreply\r\nmn\r\n").await, "MN\r\n");
    server.clock.advance(10 * SECOND);
    assert_eq!(
        mc.get("get k\r\n").await,
        "VALUE k 0 1\r\nx\r\nEND\r\n",
        "replaced"
    );
    server.clock.advance(90 * SECOND);
    // Only HTTP looks now: the port's ticker runs the flush within a bounded wait.
    let http = Http::of(&server);
    let gone = async {
        while http.get("k").await.status() != 404 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("flushed by the ticker");
    // An immediate flush cancels a pending one.
    mc.line("set k 0 0 1\r\nx\r\n").await;
    assert_eq!(mc.line("flush_all 10\r\n").await, "OK\r\n");
    assert_eq!(mc.line("flush_all 0\r\n").await, "OK\r\n");
    mc.line("set k 0 0 1\r\nx\r\n").await;
    server.clock.advance(10 * SECOND);
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 0 1\r\nx\r\nEND\r\n");
    assert_eq!(mc.line("flush_all -1\r\n").await, "OK\r\n");
    assert_eq!(mc.get("get k\r\n").await, "END\r\n");
    assert_eq!(
        mc.line("flush_all soon\r\n").await,
        "CLIENT_ERROR invalid exptime argument\r\n"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_delayed_flush_all_is_refused_unless_allowed() {
    let server = server().await;
    let mut mc = Mc::connect(&server).await;
    mc.line("set k 0 0 1\r\nx\r\n").await;
    for request in ["flush_all 10\r\n", "flush_all soon\r\n"] {
        // (counted in cmd_flush even when refused, as memcached counts them)
        assert_eq!(
            mc.line(request).await,
            "CLIENT_ERROR flush_all not allowed\r\n",
            "{request:?}"
        );
    }
    assert_eq!(mc.line("flush_all 10 noreply\r\nmn\r\n").await, "MN\r\n");
    let stats = mc.get("stats\r\n").await;
    assert!(stats.contains("STAT cmd_flush 3\r\n"), "{stats}");
    server.clock.advance(20 * SECOND);
    assert_eq!(mc.get("get k\r\n").await, "VALUE k 0 1\r\nx\r\nEND\r\n");
    server.stop().await;
}

#[tokio::test]
async fn an_independent_meta_client_round_trips_every_meta_command() {
    use async_memcached::MetaProtocol;
    let server = server().await;
    let addr = server.memcached.expect("memcached port");
    let mut client = async_memcached::Client::new(format!("tcp://{addr}"))
        .await
        .expect("connects");
    let stored = client
        .meta_set("k", "hello", false, Some(b"7"), Some(&["T100", "F5", "c"]))
        .await
        .expect("ms")
        .expect("an answer");
    let cas = stored.cas.expect("c answered");
    let got = client
        .meta_get("k", false, None, Some(&["v", "f", "c", "t", "s", "k"]))
        .await
        .expect("mg")
        .expect("a hit");
    assert_eq!(got.data.as_deref(), Some(&b"hello"[..]));
    assert_eq!(got.flags, Some(5));
    assert_eq!(got.cas, Some(cas));
    assert_eq!(got.ttl_remaining, Some(100));
    assert_eq!(got.size, Some(5));
    assert_eq!(got.key.as_deref(), Some(&b"k"[..]));
    assert!(
        client
            .meta_get("nope", true, None, Some(&["v"]))
            .await
            .expect("quiet mg")
            .is_none()
    );
    let refused = client
        .meta_set_multi(&[("a", "1"), ("b", "22"), ("k", "x")], Some(&["ME"]))
        .await
        .expect("quiet ms pipeline");
    assert_eq!(refused.len(), 1, "only the add over k fails: {refused:?}");
    let hits = client
        .meta_get_multi(&["a", "missing", "b"], Some(&["v"]))
        .await
        .expect("quiet mg pipeline");
    let values: Vec<_> = hits
        .iter()
        .map(|v| v.data.clone().unwrap_or_default())
        .collect();
    assert_eq!(values, vec![b"1".to_vec(), b"22".to_vec()]);
    let counted = client
        .meta_increment("n", false, None, Some(5), Some(&["N0", "J10", "v"]))
        .await
        .expect("ma")
        .expect("an answer");
    assert_eq!(counted.data.as_deref(), Some(&b"10"[..]));
    let counted = client
        .meta_decrement("n", false, None, Some(3), Some(&["v"]))
        .await
        .expect("ma MD")
        .expect("an answer");
    assert_eq!(counted.data.as_deref(), Some(&b"7"[..]));
    client
        .meta_delete("k", false, None, None)
        .await
        .expect("md");
    assert!(
        client
            .meta_get("k", false, None, Some(&["v"]))
            .await
            .expect("mg after md")
            .is_none()
    );
    server.stop().await;
}
