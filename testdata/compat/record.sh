#!/usr/bin/env bash
# Records testdata/compat/<case>/expected.json from BuildKit: starts a private dockerd,
# runs the compatibility test in record mode against it, and stops the daemon however
# the run ends.
#
#   bash testdata/compat/record.sh               # every case, Debian 13's Docker
#   bash testdata/compat/record.sh a b           # only cases a and b
#   bash testdata/compat/record.sh --bookworm    # the system's Docker 20.10 instead
#
# The reference is Debian 13 (trixie)'s docker.io, docker-cli, docker-buildx, containerd
# and tini (for docker-init), never installed: their .deb files come straight from
# deb.debian.org, checked against the signed trixie index (InRelease, verified with
# debian-archive-keyring, gives the SHA-256 of Packages.xz, which gives the SHA-256 of
# each .deb), and are unpacked with dpkg-deb into a cache directory,
# ${KILN_COMPAT_CACHE:-${XDG_CACHE_HOME:-~/.cache}/kiln-compat}. The system's runc runs
# the containers. With --bookworm (or KILN_COMPAT_REFERENCE=bookworm) the script uses
# the system's docker.io (Debian 12, Docker 20.10, BuildKit 0.8) instead.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mirror="${KILN_COMPAT_MIRROR:-http://deb.debian.org/debian}"
suite=trixie
packages=(docker.io docker-cli docker-buildx containerd tini)
reference="${KILN_COMPAT_REFERENCE:-trixie}"
if [[ "${1:-}" == --bookworm ]]; then
    reference=bookworm
    shift
fi
case "$reference" in
    trixie | bookworm) ;;
    *) echo "KILN_COMPAT_REFERENCE must be trixie or bookworm, not $reference" >&2; exit 2 ;;
esac

need=()
command -v runc >/dev/null || need+=(runc)
[[ -x /bin/busybox ]] || need+=(busybox-static)
if [[ "$reference" == bookworm ]]; then
    [[ -x /usr/bin/docker ]] && command -v dockerd >/dev/null || need+=(docker.io)
else
    command -v curl >/dev/null || need+=(curl)
    command -v xz >/dev/null || need+=(xz-utils)
    command -v gpgv >/dev/null || need+=(gpgv)
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
fi
if [[ ${#need[@]} -gt 0 ]]; then
    apt-get install -y "${need[@]}"
fi

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

# Prints one field of one package's stanza in a Packages file.
field() {
    awk -v pkg="$2" -v key="$3" '
        $0 == "Package: " pkg { found = 1; next }
        /^$/ { found = 0 }
        found && index($0, key ": ") == 1 { print substr($0, length(key) + 3); exit }
    ' "$1"
}

# Fetches url into file unless file already has the SHA-256 sum.
fetch() {
    local url="$1" file="$2" sum="$3"
    if [[ -f "$file" ]] && echo "$sum  $file" | sha256sum --check --status; then
        return
    fi
    curl --fail --silent --show-error --location -o "$file.part" "$url"
    if ! echo "$sum  $file.part" | sha256sum --check --status; then
        echo "$url: SHA-256 is not the $sum the signed index lists" >&2
        exit 1
    fi
    mv "$file.part" "$file"
}

# Unpacks trixie's Docker into the cache (once per set of package versions) and sets
# root to the directory holding usr/.
unpack_trixie() {
    local cache="${KILN_COMPAT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-compat}"
    local arch index_sum stamp="" pkg file sum
    arch="$(dpkg --print-architecture)"
    mkdir -p "$cache/debs"
    curl --fail --silent --show-error -o "$dir/InRelease" "$mirror/dists/$suite/InRelease"
    gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg \
        --output "$dir/Release" "$dir/InRelease" 2>"$dir/gpgv.log" || {
        cat "$dir/gpgv.log" >&2
        echo "$mirror/dists/$suite/InRelease: signature does not verify" >&2
        exit 1
    }
    index_sum="$(awk -v path="main/binary-$arch/Packages.xz" '
        /^SHA256:/ { in_sha = 1; next }
        /^[^ ]/ { in_sha = 0 }
        in_sha && $3 == path { print $1; exit }
    ' "$dir/Release")"
    [[ -n "$index_sum" ]] || { echo "no main/binary-$arch/Packages.xz in $suite's Release" >&2; exit 1; }
    fetch "$mirror/dists/$suite/main/binary-$arch/Packages.xz" "$dir/Packages.xz" "$index_sum"
    xz --decompress --stdout "$dir/Packages.xz" >"$dir/Packages"
    for pkg in "${packages[@]}"; do
        file="$(field "$dir/Packages" "$pkg" Filename)"
        sum="$(field "$dir/Packages" "$pkg" SHA256)"
        [[ -n "$file" && -n "$sum" ]] || { echo "$pkg is not in $suite/main" >&2; exit 1; }
        fetch "$mirror/$file" "$cache/debs/${file##*/}" "$sum"
        stamp+="$pkg $(field "$dir/Packages" "$pkg" Version)"$'\n'
    done
    root="$cache/$suite"
    if [[ ! -f "$root/versions" || "$(cat "$root/versions")" != "${stamp%$'\n'}" ]]; then
        rm -rf "$root.new"
        mkdir -p "$root.new"
        for pkg in "${packages[@]}"; do
            file="$(field "$dir/Packages" "$pkg" Filename)"
            dpkg-deb --extract "$cache/debs/${file##*/}" "$root.new"
        done
        printf '%s' "${stamp%$'\n'}" >"$root.new/versions"
        rm -rf "$root"
        mv "$root.new" "$root"
    fi
    echo "$suite packages:"
    sed 's/^/  /' "$root/versions"
    echo
}

if [[ "$reference" == trixie ]]; then
    unpack_trixie
    # dockerd finds containerd, its shims and docker-init on the PATH; runc is the
    # system's.
    export PATH="$root/usr/bin:$root/usr/sbin:$PATH"
    dockerd="$root/usr/sbin/dockerd"
    docker="$root/usr/bin/docker"
    mkdir -p "$dir/config/cli-plugins"
    ln -s "$root/usr/libexec/docker/cli-plugins/docker-buildx" "$dir/config/cli-plugins/docker-buildx"
    export DOCKER_CONFIG="$dir/config"
else
    dockerd="$(command -v dockerd)"
    docker=/usr/bin/docker
fi

"$dockerd" --data-root "$dir/data" -H "unix://$dir/s" --exec-root "$dir/x" \
    --pidfile "$dir/pid" --bridge none --iptables=false \
    >"$dir/log" 2>&1 &
dockerd_pid=$!
export DOCKER_HOST="unix://$dir/s"
for _ in $(seq 240); do
    "$docker" version >/dev/null 2>&1 && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
        cat "$dir/log" >&2
        echo "dockerd exited" >&2
        exit 1
    fi
    sleep 0.25
done
"$docker" version >/dev/null || { cat "$dir/log" >&2; exit 1; }

echo "recording with $reference's Docker:"
"$docker" version --format '  client {{.Client.Version}}, daemon {{.Server.Version}} (API {{.Server.APIVersion}})'
"$docker" version --format '{{range .Server.Components}}  {{.Name}} {{.Version}}{{"\n"}}{{end}}'
if [[ "$reference" == trixie ]]; then
    echo "  $("$docker" buildx version)"
    "$docker" buildx inspect | sed -n 's/^BuildKit version: */  BuildKit (as it reports itself) /p'
fi
echo

cases=""
if [[ $# -gt 0 ]]; then
    cases="$(IFS=,; echo "$*")"
fi
cd "$repo"
KILN_COMPAT_RECORD=1 KILN_COMPAT_CASE="$cases" KILN_COMPAT_DOCKER="$docker" \
    cargo test -p kiln-cli --test it -- compat::compat_cases_match_buildkit --exact --nocapture
