//! The `stat` command: ttserver's `name<TAB>value` lines with tidemark's own values,
//! and the per-command counters behind its `cnt_*` lines (one per row of the command
//! table, named by its stat column, in table order); the same numbers as memcached
//! `stats` lines and the status fields as HTTP `OPTIONS` headers.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::service::Service;

use super::command::Command;

/// Request counters, counted when a request arrives (as ttserver does).
#[derive(Debug, Default)]
pub struct Counters {
    by_command: [AtomicU64; Command::COUNT],
    put_miss: AtomicU64,
    out_miss: AtomicU64,
    get_miss: AtomicU64,
}

impl Counters {
    pub fn count(&self, command: Command) {
        self.count_n(command, 1);
    }

    /// `n` requests of one kind at once (memcached `get` counts once per key).
    pub fn count_n(&self, command: Command, n: u64) {
        self.by_command[command.index()].fetch_add(n, Ordering::Relaxed);
    }

    pub fn value(&self, command: Command) -> u64 {
        self.by_command[command.index()].load(Ordering::Relaxed)
    }

    pub fn put_result(&self, ok: bool) {
        if !ok {
            self.put_miss.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn out_result(&self, ok: bool) {
        if !ok {
            self.out_miss.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn get_miss(&self) {
        self.get_miss.fetch_add(1, Ordering::Relaxed);
    }

    /// The `cnt_*` lines (all a masked `stat` shows).
    pub fn render(&self) -> String {
        let mut text = String::new();
        for (command, n) in Command::ALL.iter().zip(&self.by_command) {
            let name = command.stat_name();
            let _ = writeln!(text, "cnt_{name}\t{}", n.load(Ordering::Relaxed));
        }
        for (name, n) in [
            ("put", &self.put_miss),
            ("out", &self.out_miss),
            ("get", &self.get_miss),
        ] {
            let _ = writeln!(text, "cnt_{name}_miss\t{}", n.load(Ordering::Relaxed));
        }
        text
    }
}

/// The server's identity and status fields of `stat`, in ttserver's order, before
/// the counters. HTTP `OPTIONS` sends the same fields as `X-TT-*` headers.
pub async fn fields(service: &Service, started: Instant, fd: i64) -> Vec<(&'static str, String)> {
    let rnum = service.counts().await.map(|c| c.live()).unwrap_or(0);
    let now = service.now() as f64 / 1e6;
    let (memsize, memrss) = memory();
    let (user, sys) = cpu_seconds();
    // Protocol identity stays ttserver's so clients that check it keep working.
    vec![
        ("version", VERSION.into()),
        ("libver", "324".into()),
        ("protver", "0.91".into()),
        ("os", os_name().into()),
        ("time", format!("{now:.6}")),
        ("pid", std::process::id().to_string()),
        ("sid", "0".into()),
        ("type", "hash".into()),
        ("path", service.store_location()),
        ("rnum", rnum.to_string()),
        ("size", service.size_bytes().await.unwrap_or(0).to_string()),
        ("bigend", u8::from(cfg!(target_endian = "big")).to_string()),
        ("fd", fd.to_string()),
        ("loadavg", format!("{:.6}", load_average())),
        ("memsize", memsize.to_string()),
        ("memrss", memrss.to_string()),
        ("ru_user", format!("{user:.6}")),
        ("ru_sys", format!("{sys:.6}")),
        ("ru_real", format!("{:.6}", started.elapsed().as_secs_f64())),
    ]
}

/// The version every dialect reports (`stat`, memcached `version`, `X-TT-VERSION`).
pub const VERSION: &str = "1.1.41";

/// The full `stat` text, for a connection on socket `fd` of a listener `started` then.
pub async fn render(service: &Service, counters: &Counters, started: Instant, fd: i64) -> String {
    let mut text = String::new();
    for (k, v) in fields(service, started, fd).await {
        let _ = writeln!(text, "{k}\t{v}");
    }
    text.push_str(&counters.render());
    let _ = writeln!(text, "tidemark_version\t{}", env!("CARGO_PKG_VERSION"));
    text
}

/// The `X-TT-*` headers of an HTTP `OPTIONS` response: the `stat` fields, upper-cased,
/// with `RU_REAL` before `RU_USER` and `RU_SYS` as ttserver sends them.
pub async fn options_headers(service: &Service, started: Instant, fd: i64) -> String {
    let mut fields = fields(service, started, fd).await;
    if let Some(at) = fields.iter().position(|(k, _)| *k == "ru_real") {
        let real = fields.remove(at);
        let user = fields
            .iter()
            .position(|(k, _)| *k == "ru_user")
            .unwrap_or(fields.len());
        fields.insert(user, real);
    }
    let mut text = String::new();
    for (k, v) in fields {
        let _ = write!(text, "X-TT-{}: {v}\r\n", k.to_ascii_uppercase());
    }
    text
}

/// The memcached `stats` reply: ttserver's `STAT` lines from the same counters, then
/// `END`.
pub async fn memcached_stats(service: &Service, counters: &Counters, started: Instant) -> String {
    let rnum = service.counts().await.map(|c| c.live()).unwrap_or(0);
    let size = service.size_bytes().await.unwrap_or(0);
    let (user, sys) = cpu_seconds();
    let n = |c: Command| counters.value(c);
    let sets = n(Command::Put)
        + n(Command::PutKeep)
        + n(Command::PutCat)
        + n(Command::PutShl)
        + n(Command::PutNr);
    let set_misses = counters.put_miss.load(Ordering::Relaxed);
    let deletes = n(Command::Out);
    let delete_misses = counters.out_miss.load(Ordering::Relaxed);
    let gets = n(Command::Get);
    let get_misses = counters.get_miss.load(Ordering::Relaxed);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let lines: [(&str, String); 21] = [
        ("pid", std::process::id().to_string()),
        ("uptime", started.elapsed().as_secs().to_string()),
        ("time", (service.now() / 1_000_000).to_string()),
        ("version", VERSION.into()),
        ("pointer_size", usize::BITS.to_string()),
        ("rusage_user", format!("{user:.6}")),
        ("rusage_system", format!("{sys:.6}")),
        ("cmd_set", sets.to_string()),
        ("cmd_set_hits", sets.saturating_sub(set_misses).to_string()),
        ("cmd_set_misses", set_misses.to_string()),
        ("cmd_delete", deletes.to_string()),
        (
            "cmd_delete_hits",
            deletes.saturating_sub(delete_misses).to_string(),
        ),
        ("cmd_delete_misses", delete_misses.to_string()),
        ("cmd_get", gets.to_string()),
        ("cmd_get_hits", gets.saturating_sub(get_misses).to_string()),
        ("cmd_get_misses", get_misses.to_string()),
        ("cmd_flush", n(Command::Vanish).to_string()),
        ("curr_items", rnum.to_string()),
        ("total_items", rnum.to_string()),
        ("bytes", size.to_string()),
        ("threads", threads.to_string()),
    ];
    let mut text = String::new();
    for (k, v) in lines {
        let _ = write!(text, "STAT {k} {v}\r\n");
    }
    text.push_str("END\r\n");
    text
}

/// The build OS as ttserver names it (`TTSYSNAME` in its myconf.h).
fn os_name() -> &'static str {
    match std::env::consts::OS {
        "linux" | "android" => "Linux",
        "freebsd" => "FreeBSD",
        "netbsd" => "NetBSD",
        "openbsd" => "OpenBSD",
        "solaris" | "illumos" => "SunOS",
        "aix" => "AIX",
        "macos" => "Mac OS X",
        "windows" => "Windows",
        _ => "Generic",
    }
}

/// The socket's file descriptor number (ttserver's `fd` line), -1 where unknown.
pub fn socket_fd(socket: &tokio::net::TcpStream) -> i64 {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        i64::from(socket.as_raw_fd())
    }
    #[cfg(not(unix))]
    {
        let _ = socket;
        -1
    }
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Virtual and resident size in bytes, from /proc/self/status (0 where unavailable).
fn memory() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmSize:"), field("VmRSS:"))
}

/// User and system CPU seconds of this process, from /proc/self/stat.
fn cpu_seconds() -> (f64, f64) {
    // Fields 14 and 15 (utime, stime) in clock ticks; Linux reports USER_HZ = 100.
    const TICKS_PER_SECOND: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // The command name (field 2) may contain spaces; fields resume after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) / TICKS_PER_SECOND, ticks(12) / TICKS_PER_SECOND)
}
