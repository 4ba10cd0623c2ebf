#!/usr/bin/env bash
# Installs what building and testing Countersign needs on Debian 12 (or Ubuntu), and nothing
# that is already there. Safe to run again.
set -euo pipefail

# Build: a C toolchain and OpenSSL headers (josekit, the independent JOSE check in tests).
# USB security keys (CTAP2 over HID): libudev, and libclang for the bindings.
# Tests: a D-Bus session and gnome-keyring, the real Secret Service the approver keeps keys in;
# an X server without a display (Xvfb) and dunst, the real notification server.
packages=(build-essential pkg-config libssl-dev libudev-dev libclang-dev
  dbus-daemon dbus-session-bus-common libglib2.0-bin gnome-keyring
  xvfb xauth dunst)

missing=()
for p in "${packages[@]}"; do
  # Removed packages keep a dpkg record ("deinstall ok config-files"): ask for "installed".
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
# rust-toolchain.toml pins the toolchain; this makes rustup fetch it now rather than mid-build.
rustup show active-toolchain >/dev/null
