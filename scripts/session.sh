#!/usr/bin/env bash
# Runs a command inside a private D-Bus session with an unlocked gnome-keyring (the Secret
# Service), which the approver's key-custody tests use for real, and — when Xvfb and dunst are
# installed — a virtual X display with dunst as the session's notification server. HOME and the XDG directories
# point into a temporary directory, so nothing touches the user's own keyring.
set -euo pipefail

if [[ "${COUNTERSIGN_IN_SESSION:-}" == 1 ]]; then
  exec "$@"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# cargo and rustup find their homes through HOME unless told: keep them.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
# A demo on a desktop still needs the X server's cookie, which lives in the real HOME.
if [[ -n "${DISPLAY:-}" && -z "${XAUTHORITY:-}" && -f "$HOME/.Xauthority" ]]; then
  export XAUTHORITY="$HOME/.Xauthority"
fi
export HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/run"
export XDG_DATA_HOME="$HOME/.local/share" XDG_CONFIG_HOME="$HOME/.config" XDG_CACHE_HOME="$HOME/.cache"
mkdir -p "$HOME" "$XDG_DATA_HOME" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME" "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"
export COUNTERSIGN_IN_SESSION=1

# shellcheck disable=SC2016
dbus-run-session -- bash -c '
  printf %s countersign-test | gnome-keyring-daemon --unlock --components=secrets --daemonize >/dev/null
  timeout 10 gdbus wait --session org.freedesktop.secrets 2>/dev/null || true
  if command -v Xvfb >/dev/null && command -v dunst >/dev/null; then
    # Tests get a display of their own; a demo on a desktop keeps the real one.
    if [[ -z "${DISPLAY:-}" || "${COUNTERSIGN_KEEP_DISPLAY:-}" != 1 ]]; then
      display=":$((90 + RANDOM % 800))"
      Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >/dev/null 2>&1 &
      export DISPLAY="$display"
      for _ in $(seq 50); do [ -e "/tmp/.X11-unix/X${display#:}" ] && break; sleep 0.1; done
    fi
    dunst >/dev/null 2>&1 &
    timeout 10 gdbus wait --session org.freedesktop.Notifications 2>/dev/null || true
  fi
  status=0
  "$@" || status=$?
  jobs -p | xargs -r kill 2>/dev/null || true
  exit "$status"
' session "$@"
