#!/usr/bin/env bash
# Perform the Dockerfile's steps on the host, without a Docker engine, so a reviewer
# can see that each one works.
#
# The script reads the Dockerfile itself (stages, RUN commands, ENV, USER, HEALTHCHECK,
# ENTRYPOINT/CMD) instead of repeating it, and refuses instructions it does not know
# how to mirror, so an edit to the Dockerfile cannot silently leave this script behind.
#
#   build stages   each in its own temporary WORKDIR; the build context is copied with
#                  .dockerignore applied; RUN commands run verbatim, except that the
#                  absolute /out/ becomes a temporary directory and `cargo install`
#                  installs into target/image-steps/chef (kept between runs)
#   runtime stage  a temporary root filesystem: the binary, the shared libraries it
#                  links (from this Debian bookworm host, the same release as
#                  debian:bookworm-slim), /etc/passwd and /etc/group as groupadd and
#                  useradd would write them, /data with the Dockerfile's owner and mode
#   running it     chroot into that root as the Dockerfile's USER, with exactly the
#                  image's environment (ENV plus Docker's default PATH), as PID 1 of a
#                  new PID namespace, inside a new network namespace that has only
#                  loopback (so 0.0.0.0:8080 and 0.0.0.0:1978 bind as in the image
#                  without touching the host's ports); then the HEALTHCHECK command the
#                  way `docker exec` runs it, a write and a read over HTTP, a Tyrant
#                  request, and SIGTERM to PID 1 as `docker stop` sends it
#
# Needs root (chroot, namespaces), python3 and curl (curl is the test client here; the
# image has none). Environment:
#   KEEP=1          keep the temporary directory for inspection
#   CACHED_BUILD=1  reuse target/image-steps/target instead of a fresh build directory
#                   (like a warm Docker layer cache; the default is a cold build)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOCKERFILE="$REPO/Dockerfile"
CHEF_ROOT="$REPO/target/image-steps/chef"

say() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'image-steps: %s\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------
# Helpers in Python: Dockerfile parsing, .dockerignore matching, JSON arrays.
# ---------------------------------------------------------------------------------
read -r -d '' PY_HELPER <<'PY' || true
import json, os, re, shlex, shutil, sys

def instructions(path):
    """(stage, line, KEYWORD, rest) with continuation lines joined and comments dropped."""
    out, buf, start, stage = [], "", None, ""
    for number, raw in enumerate(open(path, encoding="utf-8"), 1):
        line = raw.rstrip("\n")
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if start is None:
            start = number
        if text.endswith("\\"):
            buf += text[:-1].rstrip() + " "
            continue
        buf += text
        keyword, _, rest = buf.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else f"stage{len(out)}"
        out.append((stage, start, keyword, rest))
        buf, start = "", None
    return out

def ignore_regexes(path):
    patterns = []
    if os.path.exists(path):
        for raw in open(path, encoding="utf-8"):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            if text.startswith("!"):
                sys.exit(f"image-steps: exception patterns ({text}) are not mirrored; extend the script")
            text = text.strip("/")
            regex = ""
            i = 0
            while i < len(text):
                if text.startswith("**/", i):
                    regex += "(?:.*/)?"
                    i += 3
                elif text.startswith("**", i):
                    regex += ".*"
                    i += 2
                elif text[i] == "*":
                    regex += "[^/]*"
                    i += 1
                elif text[i] == "?":
                    regex += "[^/]"
                    i += 1
                else:
                    regex += re.escape(text[i])
                    i += 1
            patterns.append(re.compile(regex + r"\Z"))
    return patterns

def copy_context(src, dst):
    """COPY . . : the context with .dockerignore applied, mtimes kept (as BuildKit does)."""
    patterns = ignore_regexes(os.path.join(src, ".dockerignore"))
    excluded = lambda rel: any(p.match(rel) for p in patterns)
    copied = skipped = 0
    for root, dirs, files in os.walk(src):
        rel_root = os.path.relpath(root, src)
        rel_root = "" if rel_root == "." else rel_root + "/"
        keep = []
        for d in sorted(dirs):
            if excluded(rel_root + d):
                skipped += 1
            else:
                keep.append(d)
                os.makedirs(os.path.join(dst, rel_root + d), exist_ok=True)
        dirs[:] = keep
        for f in files:
            rel = rel_root + f
            if excluded(rel):
                skipped += 1
                continue
            os.makedirs(os.path.join(dst, rel_root), exist_ok=True)
            shutil.copy2(os.path.join(root, f), os.path.join(dst, rel), follow_symlinks=False)
            copied += 1
    print(f"copied {copied} files; {skipped} paths excluded by .dockerignore")

command = sys.argv[1]
if command == "instructions":
    for stage, line, keyword, rest in instructions(sys.argv[2]):
        print(f"{stage}\t{line}\t{keyword}\t{rest}")
elif command == "copy-context":
    copy_context(sys.argv[2], sys.argv[3])
elif command == "exec-form":
    # A JSON array (exec form) as shell words; anything else is refused.
    words = json.loads(sys.argv[2])
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        sys.exit("image-steps: not an exec-form JSON array: " + sys.argv[2])
    print(shlex.join(words))
elif command == "words":
    print("\n".join(shlex.split(sys.argv[2])))
else:
    sys.exit("unknown helper command " + command)
PY
py() { python3 -c "$PY_HELPER" "$@"; }

[[ $(id -u) == 0 ]] || die "run as root: the runtime steps use chroot and namespaces"
command -v curl >/dev/null || die "curl is needed as the test client"
grep -q 'VERSION_CODENAME=bookworm' /etc/os-release ||
    echo "warning: this host is not Debian bookworm; its libc stands in for debian:bookworm-slim's" >&2

# Cargo reads every Cargo.toml above a package looking for its workspace, so a stray
# manifest in /tmp would break the build stages (in the image, /src has only / above).
work_base() {
    local base dir
    for base in ${IMAGE_STEPS_TMPDIR:-} /var/tmp /tmp; do
        dir=$base
        while [[ -n $dir && ! -e $dir/Cargo.toml ]]; do dir=${dir%/*}; done
        [[ -z $dir && -d $base ]] && { echo "$base"; return; }
    done
    die "every candidate temporary directory has a Cargo.toml above it; set IMAGE_STEPS_TMPDIR"
}
WORK=$(mktemp -d "$(work_base)/tidemark-image-steps.XXXXXX")
chmod 0755 "$WORK"
cleanup() {
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------
# Walk the Dockerfile.
# ---------------------------------------------------------------------------------
declare -A STAGE_DIR        # stage name -> directory standing in for its WORKDIR
declare -A STAGE_CWD        # stage name -> its WORKDIR inside the image
OUT="$WORK/out"             # stands in for /out in the build stages
ROOTFS=""                   # the runtime stage's root
RUNTIME_STAGE=""
declare -a IMAGE_ENV=() ENTRYPOINT=() CMD=() HEALTH_CMD=() EXPOSED=() VOLUMES=()
IMAGE_USER="" HEALTH_OPTS="" STOP_SIGNAL="SIGTERM" IMAGE_WORKDIR="/"
stage="" cwd=""

# Emulate a runtime-stage RUN: only the user/directory set-up this image does.
emulate_runtime_run() {
    local text=$1 part
    local -a parts
    # Split on && (the only connector the runtime stage uses).
    while IFS= read -r part; do parts+=("$part"); done < <(printf '%s\n' "$text" | sed 's/ && /\n/g')
    for part in "${parts[@]}"; do
        local -a w
        mapfile -t w < <(py words "$part")
        case "${w[0]}" in
        groupadd)
            local gid="" name=""
            for ((i = 1; i < ${#w[@]}; i++)); do
                case "${w[i]}" in
                --gid) gid=${w[++i]} ;;
                --system) ;;
                -*) die "groupadd option ${w[i]} is not mirrored" ;;
                *) name=${w[i]} ;;
                esac
            done
            printf '%s:x:%s:\n' "$name" "$gid" >>"$ROOTFS/etc/group"
            echo "   groupadd: $name gid=$gid"
            ;;
        useradd)
            local uid="" ugid="" home="/nonexistent" shell="/usr/sbin/nologin" uname=""
            for ((i = 1; i < ${#w[@]}; i++)); do
                case "${w[i]}" in
                --uid) uid=${w[++i]} ;;
                --gid) ugid=${w[++i]} ;;
                --home-dir) home=${w[++i]} ;;
                --shell) shell=${w[++i]} ;;
                --system | --no-create-home) ;;
                -*) die "useradd option ${w[i]} is not mirrored" ;;
                *) uname=${w[i]} ;;
                esac
            done
            printf '%s:x:%s:%s::%s:%s\n' "$uname" "$uid" "$ugid" "$home" "$shell" >>"$ROOTFS/etc/passwd"
            echo "   useradd: $uname uid=$uid gid=$ugid home=$home shell=$shell"
            ;;
        mkdir | chown | chmod)
            local -a args=()
            for ((i = 1; i < ${#w[@]}; i++)); do
                if [[ ${w[i]} == /* ]]; then args+=("$ROOTFS${w[i]}"); else args+=("${w[i]}"); fi
            done
            "${w[0]}" "${args[@]}"
            echo "   ${w[*]}"
            ;;
        *) die "runtime RUN command '${w[0]}' is not mirrored by this script: $part" ;;
        esac
    done
}

# Copy the shared libraries the binary links into the root (debian:bookworm-slim has them).
copy_libraries() {
    local binary=$1 lib
    for lib in $(ldd "$binary" | grep -o '/[^ ]*' | sort -u); do
        mkdir -p "$ROOTFS$(dirname "$lib")"
        cp -L "$lib" "$ROOTFS$lib"
        echo "   library $lib"
    done
}

mapfile -t INSTRUCTIONS < <(py instructions "$DOCKERFILE")
[[ ${#INSTRUCTIONS[@]} -gt 0 ]] || die "no instructions in $DOCKERFILE"

for entry in "${INSTRUCTIONS[@]}"; do
    IFS=$'\t' read -r st line kw rest <<<"$entry"
    case "$kw" in
    FROM)
        stage=$st
        read -r base _ <<<"$rest"
        say "stage $stage (line $line): FROM $rest"
        STAGE_DIR[$stage]="$WORK/stage-$stage"
        mkdir -p "${STAGE_DIR[$stage]}"
        if [[ -n ${STAGE_DIR[$base]:-} ]]; then
            # FROM an earlier stage: inherit its working directory.
            cwd=${STAGE_CWD[$base]}
        elif [[ $base == rust:* ]]; then
            echo "   host toolchain stands in for $base: $(cargo --version)"
            cwd=/
        elif [[ $base == debian:* ]]; then
            RUNTIME_STAGE=$stage
            ROOTFS="$WORK/rootfs"
            mkdir -p "$ROOTFS/etc" "$ROOTFS/tmp"
            chmod 1777 "$ROOTFS/tmp"
            printf 'root:x:0:0:root:/root:/bin/bash\n' >"$ROOTFS/etc/passwd"
            printf 'root:x:0:\n' >"$ROOTFS/etc/group"
            cwd=/
        else
            die "base image $base is not mirrored by this script"
        fi
        STAGE_CWD[$stage]=$cwd
        if [[ ${CACHED_BUILD:-0} == 1 && -z $RUNTIME_STAGE ]]; then
            mkdir -p "$REPO/target/image-steps/target"
            ln -s "$REPO/target/image-steps/target" "${STAGE_DIR[$stage]}/target"
        fi
        ;;
    WORKDIR)
        cwd=$rest
        STAGE_CWD[$stage]=$cwd
        [[ $stage == "$RUNTIME_STAGE" || $cwd == /src ]] || die "build-stage WORKDIR $cwd: only /src is mirrored"
        if [[ $stage == "$RUNTIME_STAGE" ]]; then
            mkdir -p "$ROOTFS$cwd"
            IMAGE_WORKDIR=$cwd
        fi
        echo "   WORKDIR $cwd"
        ;;
    COPY)
        if [[ $rest == ". ." ]]; then
            echo "   COPY . . (line $line)"
            py copy-context "$REPO" "${STAGE_DIR[$stage]}"
        elif [[ $rest =~ ^--from=([A-Za-z0-9_-]+)\ +([^ ]+)\ +([^ ]+)$ ]]; then
            from=${BASH_REMATCH[1]} src=${BASH_REMATCH[2]} dst=${BASH_REMATCH[3]}
            # Map the source: /out/ is $OUT; a path under the source stage's WORKDIR is its directory.
            case "$src" in
            /out/*) src_path="$OUT/${src#/out/}" ;;
            /src/*) src_path="${STAGE_DIR[$from]}/${src#/src/}" ;;
            *) die "COPY --from source $src is not mirrored" ;;
            esac
            if [[ $stage == "$RUNTIME_STAGE" ]]; then
                mkdir -p "$ROOTFS$(dirname "$dst")"
                cp -p "$src_path" "$ROOTFS$dst"
                echo "   COPY --from=$from $src -> rootfs $dst"
                copy_libraries "$ROOTFS$dst"
            else
                cp -p "$src_path" "${STAGE_DIR[$stage]}/$dst"
                echo "   COPY --from=$from $src -> $dst"
            fi
        else
            die "COPY form '$rest' is not mirrored"
        fi
        ;;
    RUN)
        if [[ $stage == "$RUNTIME_STAGE" ]]; then
            echo "   RUN (line $line, emulated in the root filesystem)"
            emulate_runtime_run "$rest"
            continue
        fi
        command=${rest//\/out\//$OUT/}
        [[ $command != *" /src"* ]] || die "RUN at line $line names /src; only /out/ is mapped"
        echo "   RUN (line $line, in the stage's WORKDIR ${STAGE_CWD[$stage]}): $command"
        mkdir -p "$OUT"
        (
            cd "${STAGE_DIR[$stage]}"
            export CARGO_INSTALL_ROOT="$CHEF_ROOT" PATH="$CHEF_ROOT/bin:$PATH"
            started=$SECONDS
            sh -c "set -e; $command" || exit 1
            echo "   ... done in $((SECONDS - started)) s"
        ) || die "RUN at line $line failed"
        ;;
    ENV)
        mapfile -t pairs < <(py words "$rest")
        for pair in "${pairs[@]}"; do
            [[ $pair == *=* ]] || die "ENV must use KEY=value form: $pair"
            IMAGE_ENV+=("$pair")
            echo "   ENV $pair"
        done
        ;;
    USER) IMAGE_USER=$rest && echo "   USER $rest" ;;
    VOLUME)
        mapfile -t VOLUMES < <(py exec-form "$rest" | xargs -n1)
        for v in "${VOLUMES[@]}"; do [[ -d $ROOTFS$v ]] || die "VOLUME $v does not exist in the image"; done
        echo "   VOLUME ${VOLUMES[*]} ($(stat -c '%u:%g %a' "$ROOTFS${VOLUMES[0]}"))"
        ;;
    EXPOSE) read -r -a EXPOSED <<<"$rest" && echo "   EXPOSE ${EXPOSED[*]}" ;;
    HEALTHCHECK)
        HEALTH_OPTS=${rest%% CMD *}
        eval "HEALTH_CMD=($(py exec-form "${rest#* CMD }"))"
        echo "   HEALTHCHECK $HEALTH_OPTS: ${HEALTH_CMD[*]}"
        ;;
    STOPSIGNAL) STOP_SIGNAL=$rest && echo "   STOPSIGNAL $rest" ;;
    ENTRYPOINT) eval "ENTRYPOINT=($(py exec-form "$rest"))" && echo "   ENTRYPOINT ${ENTRYPOINT[*]}" ;;
    CMD) eval "CMD=($(py exec-form "$rest"))" && echo "   CMD ${CMD[*]}" ;;
    ARG | LABEL) echo "   $kw $rest (no effect here)" ;;
    *) die "instruction $kw (line $line) is not mirrored by this script" ;;
    esac
done

[[ -n $ROOTFS ]] || die "no runtime stage (FROM debian:...) found"
[[ -n $IMAGE_USER ]] || die "the runtime stage has no USER"
[[ ${#ENTRYPOINT[@]} -gt 0 ]] || die "no ENTRYPOINT"
[[ ${#HEALTH_CMD[@]} -gt 0 ]] || die "no HEALTHCHECK"
[[ $STOP_SIGNAL == SIGTERM ]] || die "STOPSIGNAL $STOP_SIGNAL: this script sends SIGTERM"
"$ROOTFS${ENTRYPOINT[0]}" --version | grep -q '^tidemark ' || die "the image's binary is not tidemark"

say "root filesystem"
(cd "$ROOTFS" && find . -printf '   %M %u:%g %p\n' | sort -k3)

# ---------------------------------------------------------------------------------
# Run the image: PID 1 in its own PID namespace, in a loopback-only network namespace.
# ---------------------------------------------------------------------------------
IMAGE_UID=${IMAGE_USER%%:*}
IMAGE_GID=${IMAGE_USER#*:}
[[ $IMAGE_GID == "$IMAGE_USER" ]] && IMAGE_GID=$(awk -F: -v u="$IMAGE_UID" '$1 == u || $3 == u { print $4 }' "$ROOTFS/etc/passwd")
# The environment a container gets: Docker's default PATH, HOSTNAME, HOME, then ENV.
CONTAINER_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOSTNAME=image-steps HOME=/ "${IMAGE_ENV[@]}")
http_port=""
for pair in "${IMAGE_ENV[@]}"; do
    [[ $pair == TIDEMARK_HTTP_ADDR=* ]] && http_port=${pair##*:}
done
[[ -n $http_port ]] || die "the image sets no TIDEMARK_HTTP_ADDR"
tyrant_port=""
for pair in "${IMAGE_ENV[@]}"; do
    [[ $pair == TIDEMARK_TYRANT_ADDR=* ]] && tyrant_port=${pair##*:}
done

# Everything below runs inside one new network namespace (only loopback), so the
# server binds exactly the image's addresses and the probes reach it on 127.0.0.1.
export WORK ROOTFS IMAGE_UID IMAGE_GID http_port tyrant_port IMAGE_WORKDIR HEALTH_OPTS
export ENTRYPOINT_Q CMD_Q HEALTH_Q ENV_Q
ENTRYPOINT_Q=$(printf '%q ' "${ENTRYPOINT[@]}")
CMD_Q=$(printf '%q ' "${CMD[@]}")
HEALTH_Q=$(printf '%q ' "${HEALTH_CMD[@]}")
ENV_Q=$(printf '%q ' "${CONTAINER_ENV[@]}")

say "run: ${ENTRYPOINT[*]} ${CMD[*]} as $IMAGE_UID:$IMAGE_GID, PID 1, network namespace with loopback only"
# shellcheck disable=SC2016 # expanded by the inner shell, from the exported variables
unshare --net bash -euo pipefail -c '
ip link set lo up
log="$WORK/server.log"
touch "$WORK/before-run"
sleep 0.01
# unshare --pid --fork makes tidemark PID 1 of its namespace, as in a container: the
# kernel then delivers SIGTERM only because tidemark handles it.
( eval "exec env -i $ENV_Q unshare --pid --fork chroot --userspec=$IMAGE_UID:$IMAGE_GID --groups=$IMAGE_GID $ROOTFS $ENTRYPOINT_Q $CMD_Q" ) >"$log" 2>&1 &
outer=$!   # unshare, which waits for PID 1 and exits with its status
server=""
# If anything below fails, take the server down with this shell.
trap "kill -KILL \$server $outer 2>/dev/null || true" EXIT
for _ in $(seq 1 50); do
    server=$(pgrep -P "$outer" || true)
    [[ -n $server ]] && break
    sleep 0.1
done
[[ -n $server ]] || { cat "$log"; echo "server did not start"; exit 1; }
nspid=$(awk "/^NSpid:/ { print \$NF }" /proc/$server/status)
uid=$(awk "/^Uid:/ { print \$2 }" /proc/$server/status)
echo "   server: host pid $server, PID $nspid in its namespace, $(tr "\0" " " </proc/$server/cmdline)"
awk "/^(Uid|Gid|Groups):/ { printf \"   %s\", \$0; print \"\" }" /proc/$server/status
[[ $nspid == 1 ]] || { echo "tidemark is not PID 1 of its namespace"; exit 1; }
[[ $uid == "$IMAGE_UID" ]] || { echo "tidemark runs as uid $uid, not $IMAGE_UID"; exit 1; }

have_healthcheck=1
eval "env -i $ENV_Q chroot --userspec=$IMAGE_UID:$IMAGE_GID --groups=$IMAGE_GID $ROOTFS ${HEALTH_Q} --help" >/dev/null 2>&1 || have_healthcheck=0
probe() {
    if [[ $have_healthcheck == 1 ]]; then
        eval "env -i $ENV_Q chroot --userspec=$IMAGE_UID:$IMAGE_GID --groups=$IMAGE_GID $ROOTFS $HEALTH_Q"
    else
        curl -fsS -o /dev/null "http://127.0.0.1:$http_port/healthz"
    fi
}
[[ $have_healthcheck == 1 ]] || echo "   WARNING: the binary has no healthcheck subcommand yet; probing /healthz with curl instead"
healthy=0
for i in $(seq 1 100); do
    if probe 2>/dev/null; then healthy=1; break; fi
    kill -0 $server 2>/dev/null || break
    sleep 0.1
done
[[ $healthy == 1 ]] || { cat "$log"; echo "HEALTHCHECK never passed"; exit 1; }
echo "   HEALTHCHECK ($HEALTH_OPTS) passed after $i tries: exit 0"
grep -q "\"level\":\"INFO\"" "$log" && echo "   logs are JSON: $(head -n 1 "$log" | cut -c 1-150)..."

base="http://127.0.0.1:$http_port"
ts=$(($(date +%s%N) / 1000))
code=$(curl -sS -o /dev/null -w "%{http_code}" -X PUT -H "X-Write-Timestamp: $ts" --data-binary "hello from the image" "$base/keys/image-steps")
[[ $code == 201 ]] || { echo "PUT answered $code"; exit 1; }
body=$(curl -fsS "$base/keys/image-steps")
[[ $body == "hello from the image" ]] || { echo "GET returned $body"; exit 1; }
echo "   PUT /keys/image-steps -> 201, GET -> the value"
curl -fsS "$base/readyz" >/dev/null && echo "   /readyz -> 200"

if [[ -n $tyrant_port ]]; then
    # Tyrant rnum (0xC8 0x80) from 127.0.0.1, which TIDEMARK_TYRANT_ALLOW admits.
    python3 - "$tyrant_port" <<"TYRANT"
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
s.sendall(b"\xc8\x80")
reply = b""
while len(reply) < 9:
    chunk = s.recv(9 - len(reply))
    if not chunk:
        sys.exit("Tyrant port closed the connection (refused by TIDEMARK_TYRANT_ALLOW?)")
    reply += chunk
status, count = reply[0], struct.unpack(">Q", reply[1:9])[0]
assert status == 0, f"rnum status {status}"
print(f"   Tyrant rnum on port {sys.argv[1]} -> {count} record(s)")
TYRANT
fi

echo "   data directory: $(cd "$ROOTFS/data" && stat -c "%u:%g %a %n" * | tr "\n" " ")"
bad=$(find "$ROOTFS/data" ! -uid "$IMAGE_UID" | head -1)
[[ -z $bad ]] || { echo "not owned by $IMAGE_UID: $bad"; exit 1; }

# docker stop: SIGTERM to PID 1. /readyz must turn 503 at once; the process must exit 0.
started=$(date +%s%N)
kill -TERM "$server"
ready_code=000
for _ in $(seq 1 20); do
    ready_code=$(curl -s -o /dev/null -w "%{http_code}" "$base/readyz" || true)
    [[ $ready_code == 503 ]] && break
    sleep 0.05
done
echo "   SIGTERM to PID 1: /readyz -> $ready_code while draining"
set +e
wait "$outer"
status=$?
set -e
elapsed=$((($(date +%s%N) - started) / 1000000))
echo "   exited with status $status after ${elapsed} ms"
tail -n 3 "$log" | sed "s/^/   log: /"
[[ $ready_code == 503 ]] || { echo "/readyz did not turn 503 on SIGTERM"; exit 1; }
[[ $status == 0 ]] || { echo "tidemark did not exit 0 on SIGTERM"; exit 1; }
# Compose runs the container with a read-only root filesystem: only /data may change.
written=$(find "$ROOTFS" -newer "$WORK/before-run" ! -path "$ROOTFS/data" ! -path "$ROOTFS/data/*" | head -5)
[[ -z $written ]] || { echo "wrote outside /data: $written"; exit 1; }
echo "   nothing written outside /data (read_only: true in compose holds)"
' || die "running the image failed"

say "all Dockerfile steps ran: build stages, runtime root, non-root run, HEALTHCHECK, SIGTERM"
