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
    let allow = env_value("TIDEMARK_TYRANT_ALLOW").expect("the image sets TIDEMARK_TYRANT_ALLOW");
    assert_private_ranges(&allow);
}

/// Every CIDR of a comma-separated allow-list lies inside a loopback or private range.
fn assert_private_ranges(allow: &str) {
    const PRIVATE: [&str; 6] = [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    ];
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
    let config = serve_config_from_env(&image_env(), "the image's environment");
    assert_eq!(config.data_dir, Path::new("/data"));
    assert!(config.http_addr.ip().is_unspecified());
}

/// `tidemark serve` as configured by these TIDEMARK_* variables (later ones win), parsed
/// by the real command line definition: every variable must be one it reads, with a
/// value it accepts.
fn serve_config_from_env(env: &[(String, String)], what: &str) -> ServeConfig {
    let command = Cli::command();
    let serve = command
        .find_subcommand("serve")
        .expect("a serve subcommand");
    let mut flags: Vec<(String, String)> = Vec::new();
    for (name, value) in env {
        if !name.starts_with("TIDEMARK_") {
            continue;
        }
        let flag = serve
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
            .and_then(|a| a.get_long())
            .unwrap_or_else(|| panic!("{what} sets {name}, which `tidemark serve` does not read"));
        flags.retain(|(f, _)| f != flag);
        flags.push((flag.to_string(), value.clone()));
    }
    let mut argv = vec!["tidemark".to_string(), "serve".to_string()];
    argv.extend(
        flags
            .iter()
            .map(|(flag, value)| format!("--{flag}={value}")),
    );
    use clap::Parser;
    let cli = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{what} does not parse ({argv:?}):\n{e}"));
    let tidemark::config::Command::Serve(config) = cli.command else {
        panic!("parsed as another subcommand");
    };
    *config
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
    assert_drain_timings(
        "deploy/haproxy.cfg",
        &read("deploy/haproxy.cfg"),
        &read("deploy/docker-compose.yml"),
    );
}

/// HAProxy checks /readyz and takes a server out within its drain delay; Docker waits
/// longer than drain delay + shutdown timeout. `compose` is the tidemark service's text
/// (or a whole compose file whose first settings are the tidemark service's).
fn assert_drain_timings(haproxy_name: &str, haproxy: &str, compose: &str) {
    assert!(
        haproxy.lines().any(|l| {
            let l = l.trim();
            l.starts_with("option httpchk") && l.contains("/readyz")
                || l.starts_with("http-check send") && l.contains("uri /readyz")
        }),
        "{haproxy_name}: HAProxy must check /readyz, which turns 503 as soon as a drain begins"
    );
    assert!(
        haproxy
            .lines()
            .any(|l| l.trim().starts_with("http-check expect status 200")),
        "{haproxy_name}: HAProxy must expect 200 from /readyz"
    );
    let servers: Vec<&str> = haproxy
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server ") && l.contains(" check"))
        .collect();
    assert!(
        !servers.is_empty(),
        "no checked server line in {haproxy_name}"
    );
    let defaults = haproxy
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("default-server"))
        .unwrap_or("");

    let drain = compose_value(compose, "TIDEMARK_DRAIN_DELAY")
        .map(|v| parse_duration(&v).expect("TIDEMARK_DRAIN_DELAY parses"))
        .unwrap_or_else(|| ServeConfig::default().drain_delay);
    let shutdown = compose_value(compose, "TIDEMARK_SHUTDOWN_TIMEOUT")
        .map(|v| parse_duration(&v).expect("TIDEMARK_SHUTDOWN_TIMEOUT parses"))
        .unwrap_or_else(|| ServeConfig::default().shutdown_timeout);
    let grace = compose_value(compose, "stop_grace_period")
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

// ----- deploy/: stateless replicas behind HAProxy, sharing one PostgreSQL database -----

/// A compose file's lines without comments and blank lines, as (indent, text).
fn yaml_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| (l.len() - l.trim_start().len(), l.trim()))
        .collect()
}

/// The entries of a mapping: each `key:` at `indent` inside `lines`, with the lines
/// below it (more indented) as its block. Enough of YAML for these compose files, which
/// use no anchors or flow mappings across lines (`replicas_compose_is_plain_yaml`).
fn yaml_entries<'a>(
    lines: &[(usize, &'a str)],
    indent: usize,
) -> Vec<(String, Vec<(usize, &'a str)>)> {
    let mut entries: Vec<(String, Vec<(usize, &'a str)>)> = Vec::new();
    for &(depth, text) in lines {
        if depth == indent {
            let key = text.split(':').next().unwrap_or_default();
            entries.push((key.trim().trim_matches('"').to_string(), Vec::new()));
        } else if depth > indent
            && let Some((_, block)) = entries.last_mut()
        {
            block.push((depth, text));
        }
    }
    entries
}

/// The block under `key` in a mapping at `indent`.
fn yaml_block<'a>(
    lines: &[(usize, &'a str)],
    indent: usize,
    key: &str,
) -> Option<Vec<(usize, &'a str)>> {
    yaml_entries(lines, indent)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, block)| block)
}

/// The first line of a block sits at its indentation.
fn block_indent(block: &[(usize, &str)]) -> usize {
    block.first().map(|(depth, _)| *depth).unwrap_or(0)
}

/// `key: value` on the first line of an entry, unquoted; `None` when the value is a block.
fn yaml_scalar(lines: &[(usize, &str)], indent: usize, key: &str) -> Option<String> {
    lines.iter().find_map(|&(depth, text)| {
        let (k, v) = text.split_once(':')?;
        (depth == indent && k.trim() == key && !v.trim().is_empty())
            .then(|| v.trim().trim_matches('"').trim_matches('\'').to_string())
    })
}

/// The items of a list, block (`- a`) or flow (`[a, b]`) form, unquoted.
fn yaml_list(lines: &[(usize, &str)], indent: usize, key: &str) -> Vec<String> {
    let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('\'').to_string();
    if let Some(flow) = yaml_scalar(lines, indent, key) {
        return flow
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(unquote)
            .filter(|s| !s.is_empty())
            .collect();
    }
    let block = yaml_block(lines, indent, key).unwrap_or_default();
    block
        .iter()
        .filter_map(|(_, text)| text.strip_prefix("- ").map(unquote))
        .collect()
}

struct ComposeService<'a> {
    name: String,
    lines: Vec<(usize, &'a str)>,
}

impl ComposeService<'_> {
    fn indent(&self) -> usize {
        block_indent(&self.lines)
    }

    fn scalar(&self, key: &str) -> Option<String> {
        yaml_scalar(&self.lines, self.indent(), key)
    }

    fn list(&self, key: &str) -> Vec<String> {
        yaml_list(&self.lines, self.indent(), key)
    }

    fn block(&self, key: &str) -> Option<Vec<(usize, &str)>> {
        yaml_block(&self.lines, self.indent(), key)
    }

    /// The `environment:` mapping (map form; this file does not use the list form).
    fn environment(&self) -> Vec<(String, String)> {
        let block = self.block("environment").unwrap_or_default();
        let indent = block_indent(&block);
        block
            .iter()
            .filter(|(depth, _)| *depth == indent)
            .map(|(_, text)| {
                let (name, value) = text
                    .split_once(':')
                    .unwrap_or_else(|| panic!("{}: want NAME: value, got {text:?}", self.name));
                let value = value.trim().trim_matches('"').trim_matches('\'');
                (name.trim().to_string(), value.to_string())
            })
            .collect()
    }

    fn env(&self, name: &str) -> Option<String> {
        self.environment()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The service's text, for the line-oriented checks shared with the single-node file.
    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|(depth, text)| format!("{}{text}\n", " ".repeat(*depth)))
            .collect()
    }
}

const REPLICAS_COMPOSE: &str = "deploy/docker-compose.replicas.yml";
const REPLICAS_HAPROXY: &str = "deploy/haproxy-replicas.cfg";

fn replicas_compose() -> String {
    read(REPLICAS_COMPOSE)
}

fn compose_services(compose: &str) -> Vec<ComposeService<'_>> {
    let lines = yaml_lines(compose);
    let services = yaml_block(&lines, 0, "services").expect("a services: section");
    yaml_entries(&services, block_indent(&services))
        .into_iter()
        .map(|(name, lines)| ComposeService { name, lines })
        .collect()
}

/// The tidemark services: those running the image built from the Dockerfile.
fn tidemark_replicas(compose: &str) -> Vec<ComposeService<'_>> {
    compose_services(compose)
        .into_iter()
        .filter(|s| s.scalar("image").is_some_and(|i| i.starts_with("tidemark")))
        .collect()
}

fn database_service(compose: &str) -> ComposeService<'_> {
    compose_services(compose)
        .into_iter()
        .find(|s| {
            s.scalar("image")
                .is_some_and(|i| i.starts_with("postgres:"))
        })
        .unwrap_or_else(|| panic!("{REPLICAS_COMPOSE} has no postgres service"))
}

#[test]
fn replicas_compose_is_plain_yaml() {
    // The checks below read the file line by line: anchors, aliases and merge keys
    // would hide a replica's settings from them (and from a reader).
    for (number, line) in replicas_compose().lines().enumerate() {
        let code = line.split(" #").next().unwrap_or_default();
        if code.trim_start().starts_with('#') {
            continue;
        }
        assert!(
            !code.contains("<<:") && !code.contains(": &") && !code.contains(": *"),
            "{REPLICAS_COMPOSE}:{}: spell each service out, without anchors: {line}",
            number + 1
        );
        assert!(
            !line.contains('\t'),
            "{REPLICAS_COMPOSE}:{}: a tab in YAML",
            number + 1
        );
    }
}

#[test]
fn replicas_compose_runs_stateless_replicas_on_the_database() {
    let compose = replicas_compose();
    let replicas = tidemark_replicas(&compose);
    assert!(
        replicas.len() >= 2,
        "{REPLICAS_COMPOSE}: want at least two tidemark replicas, found {:?}",
        replicas.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    let database = database_service(&compose);
    let first_env = replicas[0].environment();
    for replica in &replicas {
        let name = &replica.name;
        let build = replica
            .block("build")
            .unwrap_or_else(|| panic!("{name}: built from the repository's Dockerfile"));
        assert_eq!(
            (
                yaml_scalar(&build, block_indent(&build), "context").as_deref(),
                yaml_scalar(&build, block_indent(&build), "dockerfile").as_deref()
            ),
            (Some(".."), Some("Dockerfile")),
            "{name}: the same image as the single-node deploy"
        );

        // On the database, and stateless: nothing of the store lives in the container.
        let url = replica
            .env("TIDEMARK_DATABASE_URL")
            .unwrap_or_else(|| panic!("{name}: sets TIDEMARK_DATABASE_URL"));
        let host = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['/', '?']).next())
            .and_then(|authority| authority.rsplit('@').next())
            .and_then(|host_port| host_port.split(':').next())
            .unwrap_or_default();
        assert_eq!(
            host, database.name,
            "{name}: TIDEMARK_DATABASE_URL points at the compose file's database service"
        );
        assert!(
            replica.block("volumes").is_none() && !replica.text().contains(":/data"),
            "{name}: a replica is stateless and has no volume"
        );
        assert!(
            replica.list("tmpfs").iter().any(|t| t == "/data"),
            "{name}: cover the image's VOLUME /data with a tmpfs, or Docker creates an \
             anonymous volume for every replica container"
        );
        assert!(
            replica.scalar("read_only").as_deref() == Some("true"),
            "{name}: a read-only root filesystem, as in the single-node deploy"
        );

        // Started once the database accepts connections.
        let depends = replica
            .block("depends_on")
            .unwrap_or_else(|| panic!("{name}: depends_on the database"));
        let on_database = yaml_block(&depends, block_indent(&depends), &database.name)
            .unwrap_or_else(|| panic!("{name}: depends_on {}", database.name));
        assert_eq!(
            yaml_scalar(&on_database, block_indent(&on_database), "condition").as_deref(),
            Some("service_healthy"),
            "{name}: wait for the database's health check, not just its container"
        );

        // The environment parses as the binary's flags, with the image's defaults under it.
        let mut env = image_env();
        env.extend(replica.environment());
        let config = serve_config_from_env(&env, name);
        assert!(config.database.database_url.is_some());
        if let Some(allow) = replica.env("TIDEMARK_TYRANT_ALLOW") {
            assert_private_ranges(&allow);
        }
        assert!(
            replica.env("TIDEMARK_AUTH_TOKEN").is_none(),
            "{name}: a token belongs in TIDEMARK_AUTH_TOKEN_FILE (a secret)"
        );

        // Replicas are interchangeable: one set of settings, so one drain analysis.
        assert_eq!(
            replica.environment(),
            first_env,
            "{name} and {} must be configured alike: HAProxy treats them as equals",
            replicas[0].name
        );
    }
}

#[test]
fn replicas_database_is_healthchecked_on_a_volume_and_not_published() {
    let compose = replicas_compose();
    let lines = yaml_lines(&compose);
    let database = database_service(&compose);
    let name = &database.name;
    let healthcheck = database
        .block("healthcheck")
        .unwrap_or_else(|| panic!("{name}: a healthcheck, for depends_on: service_healthy"));
    let test = yaml_list(&healthcheck, block_indent(&healthcheck), "test");
    assert!(
        test.iter().any(|w| w.contains("pg_isready")),
        "{name}: the healthcheck runs pg_isready: {test:?}"
    );
    let volumes = database.list("volumes");
    let data = volumes
        .iter()
        .find(|v| v.ends_with(":/var/lib/postgresql/data"))
        .unwrap_or_else(|| {
            panic!("{name}: keeps /var/lib/postgresql/data on a volume: {volumes:?}")
        });
    let volume = data.split(':').next().unwrap_or_default();
    let declared = yaml_block(&lines, 0, "volumes").unwrap_or_default();
    assert!(
        yaml_entries(&declared, block_indent(&declared))
            .iter()
            .any(|(v, _)| v == volume),
        "{name}: {volume} is a named volume declared under the top-level volumes:"
    );
    assert!(
        database.block("ports").is_none() && database.scalar("ports").is_none(),
        "{name}: the database is reached on the compose network only, not published"
    );
    let password_file = database
        .env("POSTGRES_PASSWORD_FILE")
        .unwrap_or_else(|| panic!("{name}: POSTGRES_PASSWORD_FILE, from a secret"));
    let secret = password_file
        .strip_prefix("/run/secrets/")
        .unwrap_or_else(|| panic!("{name}: the password file is a secret: {password_file}"));
    assert!(
        database.list("secrets").iter().any(|s| s == secret),
        "{name}: mounts the secret {secret}"
    );
}

#[test]
fn replicas_password_is_a_secret_and_never_inline() {
    let compose = replicas_compose();
    let lines = yaml_lines(&compose);
    for (_, text) in &lines {
        let key = text
            .trim_start_matches("- ")
            .split([':', '='])
            .next()
            .unwrap_or_default();
        assert!(
            !matches!(
                key.trim(),
                "POSTGRES_PASSWORD" | "PGPASSWORD" | "TIDEMARK_AUTH_TOKEN"
            ),
            "{REPLICAS_COMPOSE}: no password inline ({text}); use a *_FILE secret"
        );
    }
    let database = database_service(&compose);
    let declared = yaml_block(&lines, 0, "secrets").expect("a top-level secrets: section");
    for replica in tidemark_replicas(&compose) {
        let name = &replica.name;
        let url = replica.env("TIDEMARK_DATABASE_URL").unwrap_or_default();
        let userinfo = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('@'))
            .map(|(userinfo, _)| userinfo)
            .unwrap_or_default();
        assert!(
            !userinfo.contains(':') && !url.contains("password="),
            "{name}: no password in TIDEMARK_DATABASE_URL; use TIDEMARK_DATABASE_PASSWORD_FILE"
        );
        let password_file = replica
            .env("TIDEMARK_DATABASE_PASSWORD_FILE")
            .unwrap_or_else(|| panic!("{name}: sets TIDEMARK_DATABASE_PASSWORD_FILE"));
        let secret = password_file
            .strip_prefix("/run/secrets/")
            .unwrap_or_else(|| panic!("{name}: the password file is a secret: {password_file}"));
        assert!(
            replica.list("secrets").iter().any(|s| s == secret),
            "{name}: mounts the secret {secret}"
        );
        assert_eq!(
            database.env("POSTGRES_PASSWORD_FILE").as_deref(),
            Some(password_file.as_str()),
            "{name} and {} read the same password secret",
            database.name
        );
        let definition = yaml_block(&declared, block_indent(&declared), secret)
            .unwrap_or_else(|| panic!("the secret {secret} is declared under secrets:"));
        let file = yaml_scalar(&definition, block_indent(&definition), "file")
            .unwrap_or_else(|| panic!("the secret {secret} is a file"));
        // The file is made by hand and never committed, and stays out of the image.
        let (dir, _) = file
            .strip_prefix("./")
            .and_then(|f| f.rsplit_once('/'))
            .unwrap_or_else(|| panic!("the secret {secret} is a file under deploy/: {file}"));
        let ignore = read(&format!("deploy/{dir}/.gitignore"));
        assert!(
            ignore.lines().any(|l| l.trim() == "*"),
            "deploy/{dir}/.gitignore must ignore everything in it, so {file} is never committed"
        );
        let dockerignore = read(".dockerignore");
        assert!(
            dockerignore
                .lines()
                .any(|l| l.trim().trim_end_matches('/') == "deploy"),
            ".dockerignore must exclude deploy/, or the password enters the build context"
        );
    }
}

/// HAProxy's sections (`backend NAME`, `frontend NAME`, …) with their lines.
fn haproxy_sections(text: &str) -> Vec<(String, Vec<&str>)> {
    let mut sections: Vec<(String, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let code = line.trim();
        if code.is_empty() || code.starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            sections.push((code.to_string(), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(code);
        }
    }
    sections
}

#[test]
fn replicas_haproxy_balances_over_every_replica_and_checks_readyz() {
    let compose = replicas_compose();
    let haproxy = read(REPLICAS_HAPROXY);
    let replicas = tidemark_replicas(&compose);
    let sections = haproxy_sections(&haproxy);
    let defaults_tcp = sections
        .iter()
        .any(|(name, lines)| name.starts_with("defaults") && lines.contains(&"mode tcp"));
    let backends: Vec<&(String, Vec<&str>)> = sections
        .iter()
        .filter(|(name, lines)| {
            name.starts_with("backend ") && lines.iter().any(|l| l.starts_with("server "))
        })
        .collect();
    for port in ["8080", "1978"] {
        let (backend, lines) = backends
            .iter()
            .map(|(name, lines)| (name, lines))
            .find(|(_, lines)| {
                lines
                    .iter()
                    .any(|l| l.starts_with("server ") && l.contains(&format!(":{port} ")))
            })
            .unwrap_or_else(|| panic!("{REPLICAS_HAPROXY}: no backend for port {port}"));
        let tcp = lines.contains(&"mode tcp") || (defaults_tcp && !lines.contains(&"mode http"));
        assert_eq!(
            tcp,
            port == "1978",
            "{backend}: Tyrant is TCP, the API is HTTP"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("option httpchk") && l.contains("/readyz")),
            "{backend}: checks GET /readyz"
        );
        assert!(
            lines.contains(&"http-check expect status 200"),
            "{backend}: expects 200 from /readyz"
        );
        let balance = lines
            .iter()
            .find_map(|l| l.strip_prefix("balance "))
            .unwrap_or("roundrobin");
        assert!(
            matches!(
                balance.trim(),
                "roundrobin" | "leastconn" | "static-rr" | "random"
            ),
            "{backend}: replicas are interchangeable; balance {balance} pins clients for nothing"
        );
        let servers: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("server "))
            .collect();
        for replica in &replicas {
            let address = format!(" {}:{port} ", replica.name);
            let server = servers
                .iter()
                .find(|l| l.contains(&address))
                .unwrap_or_else(|| panic!("{backend}: no server for {}:{port}", replica.name));
            assert!(
                server.split_whitespace().any(|w| w == "check"),
                "{backend}: {server} is health-checked"
            );
            assert!(
                !server.split_whitespace().any(|w| w == "backup"),
                "{backend}: {server}: every replica serves, none is a backup"
            );
            if port == "1978" {
                assert_eq!(
                    after(server, "port"),
                    Some("8080"),
                    "{backend}: {server} is checked on the replica's HTTP port, where /readyz is"
                );
            }
        }
        assert_eq!(
            servers.len(),
            replicas.len(),
            "{backend}: one server per tidemark replica in {REPLICAS_COMPOSE}"
        );
    }
}

#[test]
fn replicas_drain_timings_fit_together() {
    let compose = replicas_compose();
    let haproxy = read(REPLICAS_HAPROXY);
    for replica in tidemark_replicas(&compose) {
        assert_drain_timings(REPLICAS_HAPROXY, &haproxy, &replica.text());
    }
    // The same numbers as the single-node deploy, so the two READMEs' tables agree.
    let single = read("deploy/haproxy.cfg");
    let default_server = |text: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with("default-server"))
            .map(str::to_string)
    };
    assert_eq!(
        default_server(&haproxy),
        default_server(&single),
        "{REPLICAS_HAPROXY} and deploy/haproxy.cfg use the same check timing"
    );
}

#[test]
fn replicas_pools_fit_in_the_database_connection_limit() {
    let compose = replicas_compose();
    let database = database_service(&compose);
    // PostgreSQL's defaults: max_connections 100, of which 3 are for superusers only.
    let setting = |name: &str, default: u32| {
        let pattern = regex::Regex::new(&format!(r"{name}\s*=\s*(\d+)")).expect("a valid pattern");
        let command = database.scalar("command").unwrap_or_default();
        pattern
            .captures(&command)
            .map(|c| c[1].parse().expect("a number"))
            .unwrap_or(default)
    };
    let available = setting("max_connections", 100) - setting("superuser_reserved_connections", 3);
    let mut total = 0;
    for replica in tidemark_replicas(&compose) {
        let mut env = image_env();
        env.extend(replica.environment());
        total += u32::from(
            serve_config_from_env(&env, &replica.name)
                .database
                .database_pool_size,
        );
    }
    assert!(
        total <= available,
        "the replicas' pools ({total} connections) exceed what {} admits ({available}): \
         raise max_connections or lower TIDEMARK_DATABASE_POOL_SIZE",
        database.name
    );
}
