#!/usr/bin/env bash
# Records testdata/compat/<case>/expected.json from BuildKit: starts a private dockerd
# (Debian's docker.io 20.10, BuildKit built in), runs the compatibility test in record
# mode against it, and stops the daemon however the run ends.
#
#   bash testdata/compat/record.sh            # every case
#   bash testdata/compat/record.sh a b        # only cases a and b
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
for tool in dockerd /usr/bin/docker runc /bin/busybox; do
    if ! command -v "$tool" >/dev/null; then
        apt-get install -y docker.io runc busybox-static
        break
    fi
done

# Short paths: the socket path must fit in a sockaddr_un.
dir="$(mktemp -d /tmp/kcr.XXXXXX)"
dockerd_pid=""
cleanup() {
    if [[ -n "$dockerd_pid" ]]; then
        kill "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

dockerd --data-root "$dir/data" -H "unix://$dir/s" --exec-root "$dir/x" \
    --pidfile "$dir/pid" --bridge none --iptables=false >"$dir/log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="unix://$dir/s"
for _ in $(seq 240); do
    /usr/bin/docker version >/dev/null 2>&1 && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
        cat "$dir/log" >&2
        echo "dockerd exited" >&2
        exit 1
    fi
    sleep 0.25
done
/usr/bin/docker version >/dev/null || { cat "$dir/log" >&2; exit 1; }

cases=""
if [[ $# -gt 0 ]]; then
    cases="$(IFS=,; echo "$*")"
fi
cd "$repo"
KILN_COMPAT_RECORD=1 KILN_COMPAT_CASE="$cases" \
    cargo test -p kiln-cli --test it -- compat::compat_cases_match_buildkit --exact --nocapture
