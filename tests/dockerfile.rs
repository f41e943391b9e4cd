//! The container image and deployment files, read as text: fail on a careless edit.
//!
//! No Docker engine is needed. `scripts/image-steps.sh` runs the same Dockerfile's steps
//! on a host; these tests pin down the properties an edit could silently lose: a
//! multi-stage build, a fixed non-root user owning /data, exec-form ENTRYPOINT (so
//! tidemark gets SIGTERM), a health check that needs no curl, environment defaults the
//! binary accepts, and drain timings that fit together in `deploy/`.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use clap::CommandFactory;
use tidemark::config::{Cli, ServeConfig, parse_duration};

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[derive(Debug, Clone)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<Instruction>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&Instruction> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .collect()
    }

    /// The last instruction with this keyword (later ones override earlier ones).
    fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.all(keyword).into_iter().next_back()
    }

    fn position(&self, predicate: impl Fn(&Instruction) -> bool) -> Option<usize> {
        self.instructions.iter().position(predicate)
    }
}

/// Instructions with continuation lines joined and comments dropped, as Docker reads them.
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut joined = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if joined.is_empty() {
            start = index + 1;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            joined.push_str(continued.trim_end());
            joined.push(' ');
            continue;
        }
        joined.push_str(line);
        let (keyword, args) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((&joined, ""));
        out.push(Instruction {
            line: start,
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
        joined.clear();
    }
    assert!(
        joined.is_empty(),
        "the Dockerfile ends inside a continued line"
    );
    out
}

fn stages() -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions(&read("Dockerfile")) {
        if instruction.keyword == "FROM" {
            let words: Vec<&str> = instruction.args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            let base = words.first().map(|s| s.to_string()).unwrap_or_default();
            stages.push(Stage {
                base,
                name,
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| {
                    panic!(
                        "line {}: {} before the first FROM",
                        instruction.line, instruction.keyword
                    )
                })
                .instructions
                .push(instruction);
        }
    }
    stages
}

fn runtime() -> Stage {
    stages().pop().expect("the Dockerfile has a FROM")
}

/// An exec-form (JSON array) argument list.
fn exec_form(instruction: &Instruction, args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| {
        panic!(
            "line {}: {} must be in exec form (a JSON array), got {args:?}: {e}",
            instruction.line, instruction.keyword
        )
    })
}

/// The final stage's ENV as (name, value) pairs; only the `KEY=value` form is accepted.
fn image_env() -> Vec<(String, String)> {
    let mut env = Vec::new();
    for instruction in runtime().all("ENV") {
        for pair in instruction.args.split_whitespace() {
            let (name, value) = pair.split_once('=').unwrap_or_else(|| {
                panic!("line {}: use ENV KEY=value, not {pair:?}", instruction.line)
            });
            env.push((name.to_string(), value.trim_matches('"').to_string()));
        }
    }
    env
}

fn env_value(name: &str) -> Option<String> {
    image_env()
        .into_iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

fn user_of_runtime() -> String {
    let stage = runtime();
    stage
        .last("USER")
        .unwrap_or_else(|| panic!("the final stage has no USER: it would run as root"))
        .args
        .clone()
}

#[test]
fn the_build_is_multi_stage_and_the_runtime_gets_only_the_binary() {
    let stages = stages();
    let named = stages.iter().filter(|s| s.name.is_some()).count();
    assert!(
        stages.len() >= 2 && named >= 2,
        "want at least two named stages (FROM ... AS ...): {stages:#?}"
    );
    let builds: Vec<&Instruction> = stages
        .iter()
        .flat_map(|s| s.all("RUN"))
        .filter(|i| i.args.contains("cargo build"))
        .collect();
    assert!(
        builds.iter().any(|i| i
            .args
            .contains("cargo build --release --locked --bin tidemark")),
        "a build stage must run `cargo build --release --locked --bin tidemark`: {builds:#?}"
    );
    let runtime = runtime();
    assert!(
        !runtime.base.starts_with("rust"),
        "the runtime stage must not be the Rust toolchain image: {}",
        runtime.base
    );
    let copies = runtime.all("COPY");
    assert!(
        copies.iter().all(|c| c.args.starts_with("--from=")),
        "the runtime stage copies only from build stages, not the build context: {copies:#?}"
    );
    assert!(
        copies
            .iter()
            .any(|c| c.args.ends_with(" /usr/local/bin/tidemark")),
        "the binary goes to /usr/local/bin/tidemark: {copies:#?}"
    );
    assert!(
        runtime.all("ADD").is_empty(),
        "use COPY in the runtime stage"
    );
}

#[test]
fn the_runtime_runs_as_a_fixed_non_root_user_that_owns_data() {
    let user = user_of_runtime();
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        !uid.is_empty() && uid != "root" && uid != "0",
        "USER {user} runs as root"
    );
    let gid = user.split(':').nth(1);
    assert!(
        uid.parse::<u32>().is_ok() && gid.is_none_or(|g| g.parse::<u32>().is_ok()),
        "USER {user}: use a numeric UID[:GID] so orchestrators can verify it is not root"
    );
    assert!(
        gid.is_none_or(|g| g != "0"),
        "USER {user}: the group must not be root"
    );

    let stage = runtime();
    let (by_user, by_uid) = (
        format!("chown {user} /data"),
        format!("chown {uid}:{uid} /data"),
    );
    let chown = stage
        .position(|i| i.keyword == "RUN" && (i.args.contains(&by_user) || i.args.contains(&by_uid)))
        .unwrap_or_else(|| panic!("no RUN in the final stage does `chown {user} /data`"));
    let volume = stage
        .position(|i| i.keyword == "VOLUME")
        .expect("the final stage declares a VOLUME");
    assert!(
        chown < volume,
        "/data must be owned before VOLUME: changes to a volume path after VOLUME are discarded"
    );
}

#[test]
fn data_is_a_volume_and_both_ports_are_exposed() {
    let stage = runtime();
    let volumes: Vec<String> = stage
        .all("VOLUME")
        .into_iter()
        .flat_map(|v| {
            if v.args.starts_with('[') {
                exec_form(v, &v.args)
            } else {
                v.args.split_whitespace().map(str::to_owned).collect()
            }
        })
        .collect();
    assert!(
        volumes.iter().any(|v| v == "/data"),
        "VOLUME must include /data: {volumes:?}"
    );
    let exposed: Vec<String> = stage
        .all("EXPOSE")
        .into_iter()
        .flat_map(|e| {
            e.args
                .split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").to_owned())
        })
        .collect();
    for port in ["8080", "1978"] {
        assert!(
            exposed.iter().any(|p| p == port),
            "EXPOSE must include {port}: {exposed:?}"
        );
    }
}

#[test]
fn entrypoint_is_exec_form_so_tidemark_receives_sigterm() {
    let stage = runtime();
    let entrypoint = stage.last("ENTRYPOINT").expect("an ENTRYPOINT");
    let words = exec_form(entrypoint, &entrypoint.args);
    assert_eq!(
        words,
        ["/usr/local/bin/tidemark"],
        "ENTRYPOINT runs the binary directly (no shell in between)"
    );
    let cmd = stage.last("CMD").expect("a CMD");
    assert_eq!(exec_form(cmd, &cmd.args), ["serve"]);
    if let Some(signal) = stage.last("STOPSIGNAL") {
        assert_eq!(signal.args, "SIGTERM", "tidemark drains on SIGTERM");
    }
}

#[test]
fn the_health_check_is_the_binary_itself() {
    let stage = runtime();
    let check = stage.last("HEALTHCHECK").expect("a HEALTHCHECK");
    let lower = check.args.to_ascii_lowercase();
    assert!(
        !lower.contains("curl") && !lower.contains("wget"),
        "the image has no curl or wget: {}",
        check.args
    );
    let (_, command) = check
        .args
        .split_once("CMD ")
        .unwrap_or_else(|| panic!("HEALTHCHECK must have a CMD: {}", check.args));
    assert_eq!(
        exec_form(check, command.trim()),
        ["/usr/local/bin/tidemark", "healthcheck"]
    );
    for run in stage.all("RUN") {
        assert!(
            !run.args.contains("curl") && !run.args.contains("wget"),
            "line {}: the runtime image installs no HTTP client",
            run.line
        );
    }
    let help = Cli::command();
    assert!(
        help.find_subcommand("healthcheck").is_some(),
        "the binary has no `healthcheck` subcommand"
    );
}

#[test]
fn environment_defaults_listen_everywhere_and_keep_data_in_the_volume() {
    assert_eq!(
        env_value("TIDEMARK_HTTP_ADDR").as_deref(),
        Some("0.0.0.0:8080")
    );
    assert_eq!(
        env_value("TIDEMARK_TYRANT_ADDR").as_deref(),
        Some("0.0.0.0:1978")
    );
    assert_eq!(env_value("TIDEMARK_DATA_DIR").as_deref(), Some("/data"));
    assert_eq!(env_value("TIDEMARK_LOG_FORMAT").as_deref(), Some("json"));
    for (name, value) in image_env() {
        assert!(
            name != "TIDEMARK_AUTH_TOKEN",
            "a token baked into the image is readable by anyone with the image; use TIDEMARK_AUTH_TOKEN_FILE at run time"
        );
        assert!(
            name != "TIDEMARK_DURABILITY" || value == "immediate",
            "the image must keep immediate durability by default"
        );
    }
}

/// The Tyrant port has no authentication: it admits loopback and private ranges only.
#[test]
fn the_tyrant_port_admits_only_private_ranges() {
    const PRIVATE: [&str; 6] = [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    ];
    let allow = env_value("TIDEMARK_TYRANT_ALLOW").expect("the image sets TIDEMARK_TYRANT_ALLOW");
    for cidr in allow.split(',') {
        let (addr, prefix) = parse_cidr(cidr);
        let inside = PRIVATE.iter().any(|range| {
            let (range_addr, range_prefix) = parse_cidr(range);
            prefix >= range_prefix
                && network(addr, range_prefix) == network(range_addr, range_prefix)
        });
        assert!(inside, "{cidr} is not inside a loopback or private range");
    }
}

fn parse_cidr(cidr: &str) -> (IpAddr, u32) {
    let (addr, prefix) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("{cidr}: want ADDRESS/PREFIX"));
    let addr: IpAddr = addr.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"));
    let prefix: u32 = prefix.parse().unwrap_or_else(|e| panic!("{cidr}: {e}"));
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    assert!(prefix <= bits, "{cidr}: prefix longer than the address");
    (addr, prefix)
}

/// The first `prefix` bits of an address, as a number (IPv4 and IPv6 never compare equal).
fn network(addr: IpAddr, prefix: u32) -> (bool, u128) {
    let (v4, bits, value) = match addr {
        IpAddr::V4(a) => (true, 32, u128::from(u32::from(a))),
        IpAddr::V6(a) => (false, 128, u128::from(a)),
    };
    let host_bits = bits - prefix;
    let masked = value.checked_shr(host_bits).unwrap_or(0);
    (v4, masked)
}

/// Every TIDEMARK_* variable the image sets is one the binary reads, with a value it
/// accepts: parsed by the real command line definition.
#[test]
fn every_image_variable_is_a_flag_the_binary_accepts() {
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("a serve subcommand");
    let mut argv = vec!["tidemark".to_string(), "serve".to_string()];
    for (name, value) in image_env() {
        if !name.starts_with("TIDEMARK_") {
            continue;
        }
        let flag = serve
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .and_then(|a| a.get_long())
            .unwrap_or_else(|| {
                panic!("the image sets {name}, which `tidemark serve` does not read")
            });
        argv.push(format!("--{flag}={value}"));
    }
    use clap::Parser;
    let cli = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the image's environment does not parse ({argv:?}):\n{e}"));
    let tidemark::config::Command::Serve(config) = cli.command else {
        panic!("parsed as another subcommand");
    };
    assert_eq!(config.data_dir, Path::new("/data"));
    assert!(config.http_addr.ip().is_unspecified());
}

#[test]
fn dockerignore_keeps_build_output_and_data_out_of_the_context() {
    let text = read(".dockerignore");
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/'))
        .collect();
    for wanted in ["target", "data", ".git"] {
        assert!(
            patterns.contains(&wanted),
            ".dockerignore must exclude {wanted}: {patterns:?}"
        );
    }
    assert!(
        !patterns
            .iter()
            .any(|p| p.starts_with('!') && p.contains("target")),
        ".dockerignore must not re-include build output"
    );
}

// ----- deploy/: one tidemark behind HAProxy, with drain timings that fit together -----

/// A HAProxy time: a number with an optional unit (us, ms, s, m, h, d); bare is ms.
fn haproxy_time(text: &str) -> Duration {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let number: u64 = digits
        .parse()
        .unwrap_or_else(|e| panic!("HAProxy time {text:?}: {e}"));
    match &text[digits.len()..] {
        "us" => Duration::from_micros(number),
        "" | "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        "d" => Duration::from_secs(number * 86400),
        unit => panic!("HAProxy time {text:?}: unknown unit {unit}"),
    }
}

/// The value after `keyword` on a HAProxy line (`inter 1s` -> `1s`).
fn after<'a>(line: &'a str, keyword: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.by_ref().find(|w| *w == keyword)?;
    words.next()
}

/// What the compose file's tidemark service sets: an environment value (map or list
/// form) or a service key such as stop_grace_period.
fn compose_value(compose: &str, key: &str) -> Option<String> {
    let pattern = regex::Regex::new(&format!(
        r#"(?m)^\s*(?:-\s*)?{}\s*[:=]\s*"?([^"\s#]+)"?"#,
        regex::escape(key)
    ))
    .expect("a valid pattern");
    pattern.captures(compose).map(|c| c[1].to_string())
}

#[test]
fn deploy_drain_timings_fit_together() {
    let haproxy = read("deploy/haproxy.cfg");
    let compose = read("deploy/docker-compose.yml");

    assert!(
        haproxy.lines().any(|l| {
            let l = l.trim();
            l.starts_with("option httpchk") && l.contains("/readyz")
                || l.starts_with("http-check send") && l.contains("uri /readyz")
        }),
        "HAProxy must check /readyz, which turns 503 as soon as a drain begins"
    );
    assert!(
        haproxy
            .lines()
            .any(|l| l.trim().starts_with("http-check expect status 200")),
        "HAProxy must expect 200 from /readyz"
    );
    let servers: Vec<&str> = haproxy
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server ") && l.contains(" check"))
        .collect();
    assert!(!servers.is_empty(), "no checked server line in haproxy.cfg");
    let defaults = haproxy
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("default-server"))
        .unwrap_or("");

    let drain = compose_value(&compose, "TIDEMARK_DRAIN_DELAY")
        .map(|v| parse_duration(&v).expect("TIDEMARK_DRAIN_DELAY parses"))
        .unwrap_or_else(|| ServeConfig::default().drain_delay);
    let shutdown = compose_value(&compose, "TIDEMARK_SHUTDOWN_TIMEOUT")
        .map(|v| parse_duration(&v).expect("TIDEMARK_SHUTDOWN_TIMEOUT parses"))
        .unwrap_or_else(|| ServeConfig::default().shutdown_timeout);
    let grace = compose_value(&compose, "stop_grace_period")
        .map(|v| humantime::parse_duration(&v).expect("stop_grace_period parses"))
        .expect("the tidemark service sets stop_grace_period (Docker's default is 10 s)");

    for server in servers {
        let setting = |keyword: &str, default: &str| {
            after(server, keyword)
                .or_else(|| after(defaults, keyword))
                .unwrap_or(default)
                .to_string()
        };
        // HAProxy defaults: inter 2s, fall 3, rise 2.
        let inter = haproxy_time(&setting("inter", "2s"));
        let fall: u32 = setting("fall", "3").parse().expect("fall is a number");
        let detection = inter * fall;
        assert!(
            drain > detection,
            "drain delay {drain:?} must exceed inter x fall = {detection:?} ({server}): \
             otherwise tidemark stops accepting while HAProxy still routes to it"
        );
    }
    assert!(
        grace > drain + shutdown,
        "stop_grace_period {grace:?} must exceed drain delay {drain:?} + shutdown timeout \
         {shutdown:?}, or Docker SIGKILLs tidemark mid-drain"
    );
}

#[test]
fn deploy_runs_exactly_one_tidemark() {
    let compose = read("deploy/docker-compose.yml");
    // One redb file, one writer: a second replica could not open the store, and two
    // stores would each accept writes the other never sees.
    for line in compose.lines().map(str::trim) {
        if let Some(count) = line.strip_prefix("replicas:") {
            assert_eq!(count.trim(), "1", "tidemark is a single-node store: {line}");
        }
        assert!(
            !line.starts_with("scale:"),
            "tidemark is a single-node store: {line}"
        );
    }
    let images: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(str::trim)
        .collect();
    let tidemarks = images.iter().filter(|i| i.starts_with("tidemark")).count();
    let builds = compose
        .lines()
        .filter(|l| l.trim().starts_with("build:"))
        .count();
    assert_eq!(
        (tidemarks, builds),
        (1, 1),
        "exactly one tidemark service, built from the Dockerfile: {images:?}"
    );
    assert!(
        images.iter().any(|i| i.starts_with("haproxy")),
        "tidemark sits behind HAProxy: {images:?}"
    );
    assert!(
        compose.contains(":/data"),
        "the tidemark service keeps /data on a volume"
    );
}
