#!/usr/bin/env bash
# Runs the already-built Release benchmark (bench/UltraGen.Bench) inside a Debian 13 (trixie) root, so that the
# TorchSharp-cpu 0.107.0 peer rows load: its libLibTorchSharp.so needs GLIBCXX_3.4.32 (libstdc++ of GCC 13+), and
# Debian 12 has GCC 12's (GLIBCXX_3.4.30); trixie's libstdc++ in turn needs glibc 2.38+, so the whole userland is
# swapped, not just the one library. See bench/README.md.
#
#   tools/bench-in-trixie.sh [BenchmarkDotNet switches]     default: --filter '*'
#   tools/bench-in-trixie.sh --filter '*Sdpa*'
#
# Needs root (debootstrap, mount, chroot). Idempotent: the root is created only when it is absent. The host's .NET
# runtime (/usr/share/dotnet) and this repository are bind-mounted at the same paths inside a private mount namespace,
# so nothing stays mounted after the run. Build first, on the host: dotnet build -c Release bench/UltraGen.Bench
#
# Environment: TRIXIE_ROOT (default /opt/trixie), TRIXIE_MIRROR (default http://deb.debian.org/debian),
# DOTNET_DIR (default /usr/share/dotnet).
set -euo pipefail

ROOT=${TRIXIE_ROOT:-/opt/trixie}
MIRROR=${TRIXIE_MIRROR:-http://deb.debian.org/debian}
DOTNET_DIR=${DOTNET_DIR:-/usr/share/dotnet}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

case $ROOT in
    /|/bin|/boot|/dev|/etc|/home|/lib|/opt|/proc|/root|/sys|/tmp|/usr|/var|"")
        echo "bench-in-trixie: refusing TRIXIE_ROOT='$ROOT' (it is removed and recreated when unfinished)" >&2
        exit 1 ;;
esac
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-in-trixie: needs root (debootstrap, mount, chroot)" >&2
    exit 1
fi

# The build output: with RuntimeIdentifier set (UltraGen.Bench.csproj) the SDK puts it under the RID folder.
DLL=""
for candidate in "$REPO"/bench/UltraGen.Bench/bin/Release/net10.0/*/UltraGen.Bench.dll \
                 "$REPO"/bench/UltraGen.Bench/bin/Release/net10.0/UltraGen.Bench.dll; do
    if [[ -f $candidate ]]; then DLL=$candidate; break; fi
done
if [[ -z $DLL ]]; then
    echo "bench-in-trixie: no Release build; run on the host first: dotnet build -c Release bench/UltraGen.Bench" >&2
    exit 1
fi
if [[ ! -x $DOTNET_DIR/dotnet ]]; then
    echo "bench-in-trixie: no .NET runtime at $DOTNET_DIR (set DOTNET_DIR)" >&2
    exit 1
fi

# 1. The trixie root, once. The marker is written last, so an interrupted debootstrap is redone from scratch.
MARKER=$ROOT/.ultragen-bench-root
if [[ ! -f $MARKER ]]; then
    if ! command -v debootstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
    fi
    rm -rf "$ROOT"
    # minbase already has libc6 and libstdc++6 (apt needs it); named anyway, as they are the point of the root.
    debootstrap --variant=minbase --include=libc6,libstdc++6 trixie "$ROOT" "$MIRROR"
    date -u +%FT%TZ > "$MARKER"
fi

# 2. Run inside a private mount namespace: /proc, /sys, /dev, the .NET runtime and the repository at their host paths.
ARGS=("$@")
[[ ${#ARGS[@]} -eq 0 ]] && ARGS=(--filter '*')
printf -v QUOTED ' %q' "${ARGS[@]}"
REL=${DLL#"$REPO"/}

exec unshare --mount --propagation private -- /bin/bash -euo pipefail -c '
    root=$1 repo=$2 dotnet_dir=$3 rel=$4 args=$5
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root$dotnet_dir" "$root$repo"
    mount --bind "$dotnet_dir" "$root$dotnet_dir"
    mount -o remount,bind,ro "$root$dotnet_dir"
    mount --bind "$repo" "$root$repo"
    exec chroot "$root" /usr/bin/env -i \
        HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
        DOTNET_ROOT="$dotnet_dir" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 \
        /bin/bash -c "cd \"$repo\" && echo \"// bench-in-trixie: \$(. /etc/os-release; echo \$PRETTY_NAME), \$(ldd --version | head -1)\" && exec \"$dotnet_dir/dotnet\" \"$rel\"$args"
' bench-in-trixie "$ROOT" "$REPO" "$DOTNET_DIR" "$REL" "$QUOTED"
