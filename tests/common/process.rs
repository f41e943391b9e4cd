//! The real `tidemark` binary as a child process: `tidemark serve` on loopback port 0
//! for both front doors, with JSON logs, so a test can SIGKILL it, stop it with SIGTERM,
//! or run several side by side as separate processes.
//!
//! The child's environment is cleared: nothing from the caller's (a token, another
//! durability, a database URL) may change what is tested. The binary runs on the system
//! clock, so timestamps for it come from [`now_micros`].

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest wait for a started server to log both its addresses (generous: the tests
/// share a small machine with other builds).
const START_WAIT: Duration = Duration::from_secs(30);
/// Longest wait for a server to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A running `tidemark serve`, killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    pub http: SocketAddr,
    pub tyrant: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// An address a "... listening" log line announced.
enum Listening {
    Http(SocketAddr),
    Tyrant(SocketAddr),
}

impl Process {
    /// Run `tidemark serve --http-addr 127.0.0.1:0 --tyrant-addr 127.0.0.1:0
    /// --log-format json` followed by `args`, with only `env` in its environment, and
    /// wait until it has logged both addresses.
    pub fn serve<I, S>(args: I, env: &[(&str, &str)]) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args([
                "serve",
                "--http-addr",
                "127.0.0.1:0",
                "--tyrant-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tidemark binary starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        collect_lines(stdout, log.clone(), Some(address_tx));
        collect_lines(stderr, log.clone(), None);

        let deadline = Instant::now() + START_WAIT;
        let (mut http, mut tyrant) = (None, None);
        while http.is_none() || tyrant.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match address_rx.recv_timeout(left) {
                Ok(Listening::Http(addr)) => http = Some(addr),
                Ok(Listening::Tyrant(addr)) => tyrant = Some(addr),
                // Timed out, or stdout closed: the server exited before listening.
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "the server did not log both addresses within {START_WAIT:?} \
                         (http {http:?}, tyrant {tyrant:?}; exit {status:?}); log:\n{}",
                        log_text(&log)
                    );
                }
            }
        }
        Process {
            child,
            http: http.expect("loop ends with both"),
            tyrant: tyrant.expect("loop ends with both"),
            log,
        }
    }

    /// `http://{http address}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Everything the process has written to stdout and stderr so far.
    pub fn log(&self) -> String {
        log_text(&self.log)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited, `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll the server process")
    }

    /// SIGKILL (`Child::kill` on Unix): no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }

    /// SIGTERM, then wait for the graceful shutdown to end; its exit status.
    pub fn stop(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", self.child.id());
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {STOP_WAIT:?} of SIGTERM; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_text(log: &Mutex<Vec<String>>) -> String {
    log.lock().map(|l| l.join("\n")).unwrap_or_default()
}

/// Keep reading the child's output (a full pipe would stall the server) and report
/// the addresses of its "HTTP API listening" and "Tokyo Tyrant port listening" lines.
fn collect_lines(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    addresses: Option<mpsc::Sender<Listening>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(tx) = &addresses
                && let Some(listening) = listening(&line)
            {
                let _ = tx.send(listening);
            }
            if let Ok(mut log) = log.lock() {
                log.push(line);
            }
        }
    });
}

fn listening(line: &str) -> Option<Listening> {
    let event = serde_json::from_str::<serde_json::Value>(line).ok()?;
    let fields = &event["fields"];
    let (field, wrap): (&str, fn(SocketAddr) -> Listening) = match fields["message"].as_str()? {
        "HTTP API listening" => ("http_addr", Listening::Http),
        "Tokyo Tyrant port listening" => ("tyrant_addr", Listening::Tyrant),
        _ => return None,
    };
    fields[field].as_str()?.parse().ok().map(wrap)
}

/// Now on the system clock, in µs since the Unix epoch: a timestamp the binary takes
/// (it refuses timestamps more than --max-future-skew ahead of its clock).
pub fn now_micros() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_micros()).expect("fits in u64")
}
