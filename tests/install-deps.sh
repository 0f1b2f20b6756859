#!/bin/sh
# Install what Bulkhead's build and tests need on Debian 12, if missing. Idempotent.
# Build: cargo (rustup), make, a C toolchain. Bare-QEMU tier: qemu-system-x86.
# Xen tier: debootstrap and e2fsprogs (dom0 image), gcc + kernel uapi headers (xen-peer).
# Host tier: g++ for libFuzzer (tests/fuzz), shellcheck, clippy (a rustup component).
# `make bench`: gnuplot for its chart.
set -eu
need=""
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-system-x86_64 || need="$need qemu-system-x86"
have make || need="$need make"
have gcc || need="$need gcc"
# libFuzzer (tests/fuzz) is C++.
have g++ || need="$need g++"
have debootstrap || need="$need debootstrap"
have mkfs.ext4 || need="$need e2fsprogs"
have sfdisk || need="$need fdisk"
have gnuplot || need="$need gnuplot-nox"
have shellcheck || need="$need shellcheck"
[ -f /usr/include/xen/gntalloc.h ] || need="$need linux-libc-dev"
[ -f /usr/include/stdio.h ] || need="$need libc6-dev"
if [ -n "$need" ]; then
    echo "installing:$need"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086 # $SUDO: empty or one word; $need: the package list
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $need
fi
if ! have cargo; then
    echo "cargo not found: install the stable Rust toolchain (https://rustup.rs) and re-run" >&2
    exit 1
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    { have rustup && rustup component add clippy; } || { echo "cargo clippy not found: rustup component add clippy" >&2; exit 1; }
fi
