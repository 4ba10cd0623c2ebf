#!/usr/bin/env bash
# Checks a built .deb: its control fields, the files a desktop needs (binary, desktop entry
# that hands countersign:// links to the app, icons), and that the packaged binary is a
# release build without demo mode. Run inside scripts/session.sh (the binary needs a display).
set -euo pipefail

deb="${1:?usage: check-bundle.sh PATH.deb}"
fail() { echo "check-bundle: $*" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

field() { dpkg-deb -f "$deb" "$1"; }
[[ "$(field Package)" == countersign ]] || fail "package name is $(field Package)"
for dep in gnome-keyring libwebkit2gtk-4.1-0 libgtk-3-0; do
  field Depends | grep -q "$dep" || fail "Depends lacks $dep: $(field Depends)"
done

dpkg-deb -x "$deb" "$tmp/root"
bin="$tmp/root/usr/bin/countersign-desktop"
entry="$tmp/root/usr/share/applications/Countersign.desktop"
[[ -x "$bin" ]] || fail "no executable usr/bin/countersign-desktop"
[[ -f "$entry" ]] || fail "no desktop entry"
grep -qx 'Exec=countersign-desktop %u' "$entry" || fail "the desktop entry does not pass links: $(grep Exec "$entry")"
grep -qx 'MimeType=x-scheme-handler/countersign' "$entry" || fail "countersign:// is not registered"
for size in 32x32 128x128; do
  [[ -f "$tmp/root/usr/share/icons/hicolor/$size/apps/countersign-desktop.png" ]] || fail "no $size icon"
done

# A shipped build has no demo mode: it refuses --demo before opening anything.
set +e
out="$(COUNTERSIGN_HOME="$tmp/profile" timeout 60 "$bin" --demo 2>&1)"
status=$?
set -e
[[ $status -ne 0 ]] || fail "the packaged binary accepted --demo"
grep -q "this build has no demo mode" <<<"$out" || fail "unexpected output for --demo: $out"

size="$(stat -c %s "$deb")"
echo "check-bundle: $(basename "$deb") ($((size / 1024 / 1024)) MB): control, files, desktop entry and release build verified"
