#!/usr/bin/env bash
# Layer-writing benchmark: kiln's zstd and gzip layer writers against
# `tar -c | zstd -1 -T0` and `tar -c | gzip -1` (and pigz) on the same ~1 GiB tree of
# mixed files, in the same run. Reports median wall time of RUNS runs, throughput of the
# uncompressed tar stream, compression ratio and peak RSS (/usr/bin/time -v).
#
# Usage: image/bench/layer.sh [RUNS] [MIB]   (MIB: tree size, 1024 by default;
# env: BENCH_DIR to keep the tree somewhere else, MKLAYER to measure another build)
set -euo pipefail

RUNS=${1:-3}
MIB=${2:-1024}
cd "$(dirname "$0")/../.."

need() { command -v "$1" >/dev/null 2>&1; }
missing=()
[ -x /usr/bin/time ] || missing+=(time)
need zstd || missing+=(zstd)
need pigz || missing+=(pigz)
need python3 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -z "${MKLAYER:-}" ]; then
    cargo build --release -q -p kiln-image --example mklayer
    MKLAYER=target/release/examples/mklayer
fi

WORK=${BENCH_DIR:-$(mktemp -d /var/tmp/kiln-layer-bench.XXXXXX)}
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$WORK"' EXIT
TREE=$WORK/tree
OUT=$WORK/out
mkdir -p "$OUT"

# .complete holds the size the tree was generated for (empty: 1024).
have=none
if [ -e "$TREE/.complete" ]; then
    have=$(cat "$TREE/.complete")
    have=${have:-1024}
fi
if [ "$have" != "$MIB" ]; then
    echo "generating ~$MIB MiB tree in $TREE ..." >&2
    rm -rf "$TREE"
    python3 - "$TREE" "$MIB" <<'PY'
import os, random, sys
root = sys.argv[1]
scale = int(sys.argv[2]) / 1024
rng = random.Random(42)
words = [("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))))
         for _ in range(5000)]
MiB = 1 << 20
# ~40000 small text files (1-10 KiB): ~220 MiB, in a few hundred directories.
for i in range(int(40000 * scale)):
    d = os.path.join(root, "src", f"pkg{i % 300:03d}", f"mod{i % 7}")
    os.makedirs(d, exist_ok=True)
    n = rng.randint(1024, 10 * 1024)
    text = " ".join(rng.choice(words) for _ in range(n // 5))[:n]
    with open(os.path.join(d, f"file{i:05d}.txt"), "w") as f:
        f.write(text)
# ~400 MiB incompressible (like compressed archives, images, wheels).
os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
for i in range(4):
    with open(os.path.join(root, "blobs", f"random{i}.bin"), "wb") as f:
        for _ in range(int(100 * scale)):
            f.write(os.urandom(MiB))
# ~400 MiB compressible large files (logs / data dumps / uncompressed binaries).
os.makedirs(os.path.join(root, "data"), exist_ok=True)
for i in range(4):
    with open(os.path.join(root, "data", f"log{i}.txt"), "w") as f:
        written, line_no = 0, 0
        while written < 100 * MiB * scale:
            line = f"2024-01-{1 + line_no % 28:02d} {line_no:09d} INFO {' '.join(rng.choice(words) for _ in range(8))} id={rng.getrandbits(32):08x}\n"
            f.write(line)
            written += len(line)
            line_no += 1
PY
    echo "$MIB" > "$TREE/.complete"
fi
SUBSET=$TREE/data   # a ~400 MiB part of the tree, to show memory does not grow with size

# measure NAME COMMAND... : runs RUNS times (after one warm-up), prints median.
declare -A RESULT
measure() {
    local name=$1 out=$2; shift 2
    local times=() rss=0
    "$@" >/dev/null 2>&1 || { echo "$name failed: $*" >&2; "$@"; exit 1; }
    for _ in $(seq "$RUNS"); do
        local log
        log=$( { /usr/bin/time -v "$@" >/dev/null; } 2>&1 )
        local wall r
        wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' <<<"$log")
        r=$(awk -F': ' '/Maximum resident set size/ {print $2}' <<<"$log")
        times+=("$wall")
        [ "$r" -gt "$rss" ] && rss=$r
    done
    local median
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    RESULT[$name]="$median $(stat -c %s "$out") $rss"
}

TAR_BYTES=$(tar -C "$TREE" --exclude=.complete -cf - . | wc -c)
SUB_BYTES=$(tar -C "$SUBSET" -cf - . | wc -c)

measure "kiln zstd -1"     "$OUT/k.zst"  "$MKLAYER" --compression zstd --level 1 "$TREE" "$OUT/k.zst"
measure "kiln zstd (3)"    "$OUT/k3.zst" "$MKLAYER" --compression zstd "$TREE" "$OUT/k3.zst"
measure "tar|zstd -1 -T0"  "$OUT/t.zst"  sh -c "tar -C '$TREE' -cf - . | zstd -q -1 -T0 > '$OUT/t.zst'"
measure "kiln gzip -1"     "$OUT/k.gz"   "$MKLAYER" --compression gzip --level 1 "$TREE" "$OUT/k.gz"
measure "kiln gzip (6)"    "$OUT/k6.gz"  "$MKLAYER" --compression gzip "$TREE" "$OUT/k6.gz"
measure "tar|pigz -1"      "$OUT/p.gz"   sh -c "tar -C '$TREE' -cf - . | pigz -1 > '$OUT/p.gz'"
measure "tar|gzip -1"      "$OUT/t.gz"   sh -c "tar -C '$TREE' -cf - . | gzip -1 > '$OUT/t.gz'"
measure "kiln none"        "$OUT/k.tar"  "$MKLAYER" --compression none "$TREE" "$OUT/k.tar"
measure "kiln zstd -1 (subset)" "$OUT/s.zst" "$MKLAYER" --compression zstd --level 1 "$SUBSET" "$OUT/s.zst"
measure "kiln gzip -1 (subset)" "$OUT/s.gz"  "$MKLAYER" --compression gzip --level 1 "$SUBSET" "$OUT/s.gz"

# The layers must be what they claim.
zstd -q -t "$OUT/k.zst" && gzip -t "$OUT/k.gz"

echo
echo "tree: $(du -sh --apparent-size "$TREE" | cut -f1), tar stream $((TAR_BYTES / 1048576)) MiB; subset $((SUB_BYTES / 1048576)) MiB; $(nproc) CPUs; median of $RUNS runs"
printf '%-24s %9s %10s %8s %12s\n' "writer" "seconds" "MB/s" "ratio" "max RSS MiB"
for name in "kiln zstd -1" "kiln zstd (3)" "tar|zstd -1 -T0" "kiln gzip -1" "kiln gzip (6)" "tar|pigz -1" "tar|gzip -1" "kiln none" "kiln zstd -1 (subset)" "kiln gzip -1 (subset)"; do
    read -r secs size rss <<<"${RESULT[$name]}"
    bytes=$TAR_BYTES
    [[ $name == *subset* ]] && bytes=$SUB_BYTES
    awk -v n="$name" -v s="$secs" -v z="$size" -v b="$bytes" -v r="$rss" \
        'BEGIN {printf "%-24s %9.2f %10.0f %8.3f %12.1f\n", n, s, b/s/1e6, z/b, r/1024}'
done
