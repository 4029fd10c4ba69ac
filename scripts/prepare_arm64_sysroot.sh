#!/usr/bin/env bash
# Prepare what the emulated bundle test needs on an x86_64 Debian machine (run as root):
#
#   - qemu-user (qemu-aarch64), from Debian;
#   - an aarch64 CPython 3.11 from Debian's arm64 packages, unpacked with `dpkg -x` into a
#     sysroot folder (never `apt-get install`-ed: the amd64 python packages conflict with them),
#     to be started as `qemu-aarch64 -L ROOT ROOT/usr/bin/python3.11`.
#
# Usage: scripts/prepare_arm64_sysroot.sh [ROOT]     (default: .cache/arm64-root, git-ignored)
#
# Idempotent: a root that was unpacked from the same package list is left as it is (the .debs
# are kept in .cache/arm64-debs, so a re-run downloads nothing).  Prints the root's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT="${1:-.cache/arm64-root}"
DEBS=".cache/arm64-debs"
# The interpreter, its standard library and the shared libraries its modules and the bundle's
# wheels load: the Depends of the three python packages (`apt-cache depends`), and libgcc_s
# (Polars' and isal's wheels link it).
PACKAGES=(
    python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    libc6 libgcc-s1 libcrypt1 zlib1g libssl3 libffi8 libexpat1 libbz2-1.0 liblzma5 libuuid1
    libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libdb5.3 libnsl2 libtirpc3 libcom-err2
    libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 media-types tzdata
)
STAMP="$ROOT/.bubbly-sysroot"
WANT="${PACKAGES[*]}"

need_apt_update=0
if ! command -v qemu-aarch64 >/dev/null; then
    need_apt_update=1
fi
if [[ -x "$ROOT/usr/bin/python3.11" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    have_root=1
else
    have_root=0
fi

if [[ $need_apt_update == 1 || $have_root == 0 ]]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
    fi
    apt-get update -qq
fi
if ! command -v qemu-aarch64 >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
fi

if [[ $have_root == 0 ]]; then
    mkdir -p "$DEBS"
    (
        cd "$DEBS"
        missing=()
        for pkg in "${PACKAGES[@]}"; do
            # media-types and tzdata are architecture-independent (Architecture: all).
            case "$pkg" in media-types | tzdata) spec="$pkg" ;; *) spec="$pkg:arm64" ;; esac
            compgen -G "${pkg}_*_arm64.deb" >/dev/null || compgen -G "${pkg}_*_all.deb" >/dev/null || missing+=("$spec")
        done
        if ((${#missing[@]})); then
            # apt's sandbox user cannot write here; as root the download is simply unsandboxed.
            apt-get download -qq "${missing[@]}" 2>&1 | grep -v "unsandboxed as root" || true
        fi
    )
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    for pkg in "${PACKAGES[@]}"; do
        deb=$(compgen -G "$DEBS/${pkg}_*_arm64.deb" || compgen -G "$DEBS/${pkg}_*_all.deb")
        dpkg -x "$(echo "$deb" | sort -V | tail -n1)" "$ROOT"
    done
    echo "$WANT" >"$STAMP"
fi

# It must start, and have the modules the bundle uses.
qemu-aarch64 -L "$ROOT" "$ROOT/usr/bin/python3.11" -c \
    'import platform, ssl, zlib, bz2, lzma, ctypes, decimal, uuid; assert platform.machine() == "aarch64", platform.machine()'
realpath "$ROOT"
