#!/bin/sh
# Install what Bulkhead's build and tests need on Debian 12, if missing. Idempotent.
set -eu
need=""
command -v qemu-system-x86_64 >/dev/null 2>&1 || need="$need qemu-system-x86"
command -v make >/dev/null 2>&1 || need="$need make"
command -v cc >/dev/null 2>&1 || need="$need gcc"
if [ -n "$need" ]; then
    echo "installing:$need"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install the stable Rust toolchain (https://rustup.rs) and re-run" >&2
    exit 1
fi
