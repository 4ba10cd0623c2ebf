#!/usr/bin/env bash
# The desktop demo: the app with an embedded broker on loopback, simulated agents and the
# development authenticator. Requests arrive, you are notified, you review and approve, and the
# grant is redeemed in the history. Runs in a private keyring session; needs a display (on a
# machine without one, run it under `xvfb-run -a`).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${COUNTERSIGN_IN_SESSION:-}" != 1 ]]; then
  scripts/setup.sh
  npm --prefix ui run build
  cargo build --locked -p countersign-desktop --features demo,custom-protocol
  COUNTERSIGN_KEEP_DISPLAY=1 exec scripts/session.sh "$0" "$@"
fi

if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]]; then
  echo "demo-app: no display; run it on a desktop, or as: xvfb-run -a make demo" >&2
  exit 1
fi
exec target/debug/countersign-desktop --demo
