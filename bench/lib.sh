# Shared by the bench/ scripts (sourced, not run).

# wait_port PORT [SECONDS]: wait until something accepts on 127.0.0.1:PORT, at most
# SECONDS (default 10); fail with a message after that.
wait_port() {
    local port=$1 seconds=${2:-10} _
    for _ in $(seq $((seconds * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on 127.0.0.1:$port after $seconds s" >&2
    return 1
}

# target_addr TARGET HTTP_PORT TYRANT_PORT: the loopback address tidemark-bench should
# use for a tidemark server's TARGET (tyrant | tidemark-http); fails for any other.
target_addr() {
    case "$1" in
        tyrant) echo "127.0.0.1:$3" ;;
        tidemark-http) echo "127.0.0.1:$2" ;;
        *) echo "TARGET must be tyrant or tidemark-http" >&2; return 1 ;;
    esac
}
