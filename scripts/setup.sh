#!/usr/bin/env bash
# Installs what building and testing Countersign needs on Debian 12 (or Ubuntu), and nothing
# that is already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Build: a C toolchain and OpenSSL headers (josekit, the independent JOSE check in tests).
# USB security keys (CTAP2 over HID): libudev, and libclang for the bindings.
# Tests: a D-Bus session and gnome-keyring, the real Secret Service the approver keeps keys in;
# an X server without a display (Xvfb) and dunst, the real notification server; WebKitWebDriver
# and Python (standard library only) for the end-to-end run of the real app. PostgreSQL's server
# binaries: the broker's tests start a cluster of their own with them (never the system's).
# The desktop app: WebKitGTK and GTK, the tray (ayatana appindicator), librsvg, libxdo; Node.js
# and npm build its UI.
packages=(build-essential pkg-config libssl-dev libudev-dev libclang-dev
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev file
  dbus-daemon dbus-session-bus-common libglib2.0-bin gnome-keyring
  xvfb xauth dunst
  webkit2gtk-driver python3
  postgresql)

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

if ! command -v npm >/dev/null; then
  echo "setup: npm not found; install Node.js 20 or newer (https://nodejs.org), then run this again" >&2
  exit 1
fi
# The UI's packages, exactly as locked.
if [[ ! -d ui/node_modules ]] || [[ ui/package-lock.json -nt ui/node_modules/.package-lock.json ]]; then
  echo "setup: installing the UI's npm packages"
  npm --prefix ui ci --no-audit --no-fund
fi

# The official MCP TypeScript SDK, the gateway's tests' TypeScript client (tests/mcp/ts/).
if [[ ! -d tests/mcp/ts/node_modules ]] || [[ tests/mcp/ts/package-lock.json -nt tests/mcp/ts/node_modules/.package-lock.json ]]; then
  echo "setup: installing the MCP TypeScript SDK (tests/mcp/ts)"
  npm --prefix tests/mcp/ts ci --no-audit --no-fund
fi

# An independent WebAuthn relying party, JOSE and JCS in Python, for the interoperability test
# of real grants (tests/e2e/verify_grant.py); into target/, never system-wide.
if ! PYTHONPATH=target/python-deps python3 -c "import webauthn, rfc8785" 2>/dev/null; then
  echo "setup: installing the Python relying party used to check grants (target/python-deps)"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
    --target target/python-deps -r tests/e2e/requirements.txt
fi

# The official MCP SDK for Python, twice: 1.x (the 2025-11-25 session era) and 2.x (the
# 2026-07-28 stateless era): the real clients and servers the gateway's tests put it between
# (tests/mcp/); into target/, never system-wide.
for sdk in python-mcp1:1.30.0 python-mcp2:2.3.0; do
  dir=${sdk%%:*} version=${sdk##*:}
  if ! PYTHONPATH=target/$dir python3 -c "import sys; from importlib.metadata import version; sys.exit(version('mcp') != '$version')" 2>/dev/null; then
    echo "setup: installing the Python MCP SDK $version (target/$dir)"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
      --target "target/$dir" "mcp==$version"
  fi
done

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install rustup (https://rustup.rs), then run this again" >&2
  exit 1
fi
# rust-toolchain.toml pins the toolchain; this makes rustup fetch it now rather than mid-build.
rustup show active-toolchain >/dev/null

# cargo-machete, which `make lint` runs to refuse unused dependencies; into target/tools.
MACHETE_VERSION=0.9.2
if ! target/tools/bin/cargo-machete --version 2>/dev/null | grep -q "$MACHETE_VERSION"; then
  echo "setup: installing cargo-machete $MACHETE_VERSION (target/tools)"
  cargo install --quiet --locked --root target/tools cargo-machete --version "$MACHETE_VERSION"
fi

# cargo-fuzz and the nightly toolchain, for the fuzz targets (fuzz/, scripts/fuzz.sh); the
# project itself builds with its pinned stable toolchain.
FUZZ_VERSION=0.13.2
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "setup: installing the nightly toolchain (for cargo fuzz)"
  rustup toolchain install nightly --profile minimal
fi
if ! target/tools/bin/cargo-fuzz --version 2>/dev/null | grep -q "$FUZZ_VERSION"; then
  echo "setup: installing cargo-fuzz $FUZZ_VERSION (target/tools)"
  cargo install --quiet --locked --root target/tools cargo-fuzz --version "$FUZZ_VERSION"
fi
