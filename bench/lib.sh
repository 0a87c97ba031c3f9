# Shared pieces of the benchmark scripts (sourced by bench/run and bench/registry.sh):
# packages, the kiln binary, a loopback registry, base images, measuring and cleanup.
# Everything a script starts is recorded in CLEANUP and undone by bench_cleanup.

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_SRC/.." && pwd)
BENCH_CACHE=${BENCH_CACHE:-$HOME/.cache/kiln-bench}
DEBIAN_SUITE=${DEBIAN_SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Installs the Debian packages the benchmarks use that are missing (as root).
bench_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Builds kiln (unless KILN names a binary) and copies it into the work dir, so that a
# rebuild of the tree during the run does not change the binary being measured.
bench_kiln() {
    local src=${KILN:-}
    if [ -z "$src" ]; then
        log "building kiln (cargo build --release -p kiln-cli)"
        (cd "$REPO" && cargo build --release -q -p kiln-cli)
        src=$REPO/target/release/kiln
        KILN_DESC="built from $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- . || echo ' with uncommitted changes')"
    else
        KILN_DESC="$src, built $(date -u -r "$src" '+%Y-%m-%d %H:%M UTC')"
    fi
    mkdir -p "$WORK/bin"
    cp "$src" "$WORK/bin/kiln"
    KILN=$WORK/bin/kiln
}

CLEANUP=()
bench_cleanup() {
    local i
    for ((i = ${#CLEANUP[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUP[i]}" || true
    done
    CLEANUP=()
}

# Unmounts whatever is still mounted below a directory, deepest first.
unmount_below() {
    local dir=$1 m
    [ -n "$dir" ] || return 0
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts |
        sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" || true; done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until a command succeeds, up to $1 seconds.
wait_for() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.2
    done
}

# Stops a process we started: SIGTERM, then SIGKILL after 30 s.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# Starts Debian's docker-registry on 127.0.0.1 with storage in DIR; sets REG (host:port)
# and REG_PID.
start_registry() {
    local dir=$1 port
    mkdir -p "$dir/data"
    port=$(free_port)
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
    /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
    REG_PID=$!
    CLEANUP+=("stop_pid $REG_PID")
    REG=127.0.0.1:$port
    wait_for 30 curl -fsS "http://$REG/v2/" || die "registry did not start: $(cat "$dir/log")"
}

# A rootfs tarball with Debian's static busybox and its applets as symlinks.
busybox_rootfs() {
    local out=$1 d
    d=$(mktemp -d "$WORK/bbroot.XXXXXX")
    mkdir -p "$d/bin" "$d/tmp" "$d/etc" "$d/root"
    chmod 1777 "$d/tmp"
    cp /bin/busybox "$d/bin/busybox"
    local a
    for a in $("$d/bin/busybox" --list); do
        [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$d/etc/passwd"
    printf 'root:x:0:\n' >"$d/etc/group"
    tar -C "$d" --numeric-owner -cf "$out" .
    rm -rf "$d"
}

# A Debian minbase rootfs tarball from debootstrap, cached under BENCH_CACHE.
debian_rootfs() {
    local out=$BENCH_CACHE/debian-$DEBIAN_SUITE-minbase.tar
    if [ ! -s "$out" ]; then
        log "debootstrap $DEBIAN_SUITE minbase from $DEBIAN_MIRROR (cached in $out afterwards)"
        mkdir -p "$BENCH_CACHE"
        local d
        d=$(mktemp -d "$WORK/debroot.XXXXXX")
        CLEANUP+=("unmount_below $d; rm -rf $d")
        debootstrap --variant=minbase "$DEBIAN_SUITE" "$d" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
            die "debootstrap failed: $(tail -20 "$WORK/debootstrap.log")"
        unmount_below "$d"
        rm -rf "$d"/var/lib/apt/lists/* "$d"/var/cache/apt/*.bin
        tar -C "$d" --numeric-owner -cf "$out.tmp" . && mv "$out.tmp" "$out"
        rm -rf "$d"
    fi
    printf '%s\n' "$out"
}

# Pushes the base images (busybox, debian) to the registry REG through a kiln root of
# their own.
push_bases() {
    local root=$WORK/kiln-setup
    busybox_rootfs "$WORK/busybox.tar"
    "$KILN" --root "$root" import -c 'CMD ["sh"]' "$WORK/busybox.tar" "$REG/bench/busybox:latest" >/dev/null
    "$KILN" --root "$root" push "$REG/bench/busybox:latest" >"$WORK/push-busybox.log" 2>&1 ||
        die "kiln push busybox failed: $(tail "$WORK/push-busybox.log")"
    if [ -n "${WANT_DEBIAN:-}" ]; then
        local tarball
        tarball=$(debian_rootfs)
        "$KILN" --root "$root" import -c 'CMD ["bash"]' "$tarball" "$REG/bench/debian:latest" >/dev/null
        "$KILN" --root "$root" push "$REG/bench/debian:latest" >"$WORK/push-debian.log" 2>&1 ||
            die "kiln push debian failed: $(tail "$WORK/push-debian.log")"
    fi
    unmount_below "$root"
    rm -rf "$root"
}

median_of() { sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]}'; }
load1() { cut -d' ' -f1 /proc/loadavg; }

machine_info() {
    local cpu mem
    cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    printf -- '- machine: %s CPUs (%s), %s RAM, kernel %s, %s\n' "$(nproc)" "$cpu" "$mem" "$(uname -r)" \
        "$(. /etc/os-release && echo "$PRETTY_NAME")"
}
