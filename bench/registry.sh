#!/usr/bin/env bash
# Registry benchmark: push and pull of a 1 GiB image (one layer of random data) to a
# registry on 127.0.0.1, `kiln push` / `kiln pull --no-unpack` (into a fresh root) against
# `skopeo copy` of the same image (OCI layout → registry, registry → OCI layout), in the
# same run, tools alternating. Every push goes to an empty registry. Prints a Markdown
# section: median (min–max) seconds of RUNS runs, MB/s of the image's blobs, ratios
# kiln/skopeo, peak RSS (/usr/bin/time %M).
#
# Usage: bash bench/registry.sh            (also run by `bash bench/run`)
# env: RUNS (default 3), MIB (image size, default 1024), KILN, BENCH_DIR, KEEP=1
set -euo pipefail
source "$(dirname "$0")/lib.sh"

RUNS=${RUNS:-3}
MIB=${MIB:-1024}
[ "$(id -u)" = 0 ] || die "run as root"
bench_install docker-registry skopeo busybox-static time curl python3

WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/kiln-registry-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'bench_cleanup; [ -n "${KEEP:-}" ] || { unmount_below "$WORK"; rm -rf "$WORK"; }' EXIT
trap 'exit 130' INT TERM
bench_kiln

# The image: busybox and MIB MiB of random data in one layer, imported into a kiln root,
# and the same image as an OCI layout for skopeo.
SRC=$WORK/src-root
log "making the ${MIB} MiB image"
mkdir -p "$WORK/rootfs/bin"
cp /bin/busybox "$WORK/rootfs/bin/"
head -c $((MIB << 20)) /dev/urandom >"$WORK/rootfs/big.bin"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
rm -rf "$WORK/rootfs"
"$KILN" --root "$SRC" import "$WORK/rootfs.tar" bench/big:1 >/dev/null
rm "$WORK/rootfs.tar"
"$KILN" --root "$SRC" save --format oci -o "$WORK/big-oci.tar" bench/big:1
mkdir -p "$WORK/layout"
tar -C "$WORK/layout" -xf "$WORK/big-oci.tar"
rm "$WORK/big-oci.tar"
BYTES=$(du -sb "$WORK/layout/blobs" | cut -f1)

RAW=$WORK/registry.tsv
: >"$RAW"
# timed OP TOOL RUN COMMAND...
timed() {
    local op=$1 tool=$2 run=$3; shift 3
    local logf=$WORK/$op-$tool-$run.log
    if /usr/bin/time -f '%e %M' -o "$WORK/time.out" "$@" >"$logf" 2>&1; then
        printf '%s\t%s\t%s\t%s\t%s\n' "$op" "$tool" "$(tail -1 "$WORK/time.out")" "$(load1)" ok >>"$RAW"
    else
        log "FAILED: $op $tool run $run: $*"
        tail -15 "$logf" | sed 's/^/    /' >&2
        printf '%s\t%s\t0 0\t%s\tFAIL\n' "$op" "$tool" "$(load1)" >>"$RAW"
    fi
}

# One run of one tool: a fresh registry, push, pull into an empty place, stop.
one_run() {
    local tool=$1 run=$2 n=${#CLEANUP[@]}
    start_registry "$WORK/reg-$tool-$run"
    local dest=$REG/bench/big:1
    if [ "$tool" = kiln ]; then
        timed push kiln "$run" "$KILN" --root "$SRC" push bench/big:1 "$dest"
        timed pull kiln "$run" "$KILN" --root "$WORK/pull-root" pull --no-unpack "$dest"
        unmount_below "$WORK/pull-root"
        rm -rf "$WORK/pull-root"
    else
        timed push skopeo "$run" skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout" "docker://$dest"
        timed pull skopeo "$run" skopeo copy -q --src-tls-verify=false "docker://$dest" "oci:$WORK/pull-layout"
        rm -rf "$WORK/pull-layout"
    fi
    stop_pid "$REG_PID"
    CLEANUP=("${CLEANUP[@]:0:n}")
    rm -rf "$WORK/reg-$tool-$run"
}

for ((run = 1; run <= RUNS; run++)); do
    if ((run % 2)); then order=(kiln skopeo); else order=(skopeo kiln); fi
    for tool in "${order[@]}"; do
        log "registry run $run: $tool"
        one_run "$tool" "$run"
    done
done

python3 - "$RAW" "$BYTES" "$RUNS" "$MIB" <<'PY'
import statistics, sys
from collections import defaultdict
raw, size, runs, mib = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
t, rss, loads = defaultdict(list), defaultdict(int), []
for line in open(raw):
    op, tool, timing, load, status = line.rstrip("\n").split("\t")
    loads.append(float(load))
    if status == "ok":
        secs, kib = timing.split()
        t[(op, tool)].append(float(secs))
        rss[(op, tool)] = max(rss[(op, tool)], int(kib))
print(f"### Registry: push and pull of a {mib} MiB image ({size / 1e6:.0f} MB of blobs), "
      f"loopback registry, median of {runs}")
print()
print("| | kiln s (min–max) | kiln MB/s | skopeo s (min–max) | skopeo MB/s | kiln/skopeo | peak RSS MiB kiln / skopeo |")
print("|---|---|---|---|---|---|---|")
for op in ("push", "pull"):
    cells, med = [], {}
    for tool in ("kiln", "skopeo"):
        v = t.get((op, tool))
        if v:
            med[tool] = statistics.median(v)
            cells += [f"{med[tool]:.2f} ({min(v):.2f}–{max(v):.2f})", f"{size / med[tool] / 1e6:.0f}"]
        else:
            cells += ["FAIL", "–"]
    r = f"{med['kiln'] / med['skopeo']:.2f}" if len(med) == 2 else "–"
    print(f"| {op} | " + " | ".join(cells) + f" | {r} | {rss[(op, 'kiln')] // 1024} / {rss[(op, 'skopeo')] // 1024} |")
print()
print(f"Load average (1 min) during the runs: median {statistics.median(loads):.1f}, "
      f"max {max(loads):.1f}.")
PY
