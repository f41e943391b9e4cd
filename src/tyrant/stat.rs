//! The `stat` command: ttserver's `name<TAB>value` lines with tidemark's own values,
//! and the per-command counters behind its `cnt_*` lines (one per row of the command
//! table, named by its stat column, in table order).

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
        self.by_command[command.index()].fetch_add(1, Ordering::Relaxed);
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

/// The full `stat` text, for a connection on socket `fd` of a listener `started` then.
pub async fn render(service: &Service, counters: &Counters, started: Instant, fd: i64) -> String {
    let rnum = service.counts().await.map(|c| c.live()).unwrap_or(0);
    let now = service.now() as f64 / 1e6;
    let (memsize, memrss) = memory();
    let (user, sys) = cpu_seconds();
    let mut text = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(text, "{k}\t{v}");
    };
    // Protocol identity stays ttserver's so clients that check it keep working.
    line("version", "1.1.41".into());
    line("libver", "324".into());
    line("protver", "0.91".into());
    line("os", os_name().into());
    line("time", format!("{now:.6}"));
    line("pid", std::process::id().to_string());
    line("sid", "0".into());
    line("type", "hash".into());
    line("path", service.store_location());
    line("rnum", rnum.to_string());
    line("size", service.size_bytes().await.unwrap_or(0).to_string());
    line("bigend", u8::from(cfg!(target_endian = "big")).to_string());
    line("fd", fd.to_string());
    line("loadavg", format!("{:.6}", load_average()));
    line("memsize", memsize.to_string());
    line("memrss", memrss.to_string());
    line("ru_user", format!("{user:.6}"));
    line("ru_sys", format!("{sys:.6}"));
    line("ru_real", format!("{:.6}", started.elapsed().as_secs_f64()));
    text.push_str(&counters.render());
    let _ = writeln!(text, "tidemark_version\t{}", env!("CARGO_PKG_VERSION"));
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
