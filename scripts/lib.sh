# Shared by scripts/crash-test.sh and deploy/drain-check.sh (sourced, not run).

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
