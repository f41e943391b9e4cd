# Shared by scripts/crash-test.sh, deploy/drain-check.sh and
# deploy/replicas-drain-check.sh (sourced, not run).

# tidemark_binary REPO: set BIN to $TIDEMARK_BIN, or build the release binary of the
# repository at REPO and set BIN to it; exit with the build's tail on failure.
tidemark_binary() {
    local repo=$1 build_log
    if [[ -n ${TIDEMARK_BIN:-} ]]; then
        BIN=$TIDEMARK_BIN
        return
    fi
    echo "building the release binary"
    if ! build_log=$(cargo build --release --locked --bin tidemark --manifest-path "$repo/Cargo.toml" 2>&1); then
        printf '%s\n' "$build_log" | tail -n 30 >&2
        exit 1
    fi
    BIN="${CARGO_TARGET_DIR:-$repo/target}/release/tidemark"
}

# need_haproxy: exit with a hint unless haproxy is installed.
need_haproxy() {
    command -v haproxy >/dev/null || {
        echo "needs haproxy (apt-get install haproxy)" >&2
        exit 1
    }
}

# compose_setting FILE KEY: the value of KEY in a compose file's environment.
compose_setting() {
    sed -n "s/^ *$2: *\"\\{0,1\\}\\([^\" ]*\\)\"\\{0,1\\}.*/\\1/p" "$1" | head -1
}

# work_dir PREFIX: make WORK, a fresh temp dir, and PIDS, the processes started in it;
# on exit every one of them is killed and WORK removed (kept with KEEP=1).
work_dir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap cleanup_work EXIT
}

cleanup_work() {
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}

# free_ports N: N free loopback ports on one line (bound and released: a small race,
# acceptable for these scripts).
free_ports() {
    python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
' "$1"
}
