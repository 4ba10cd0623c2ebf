#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each, starting from its committed
# corpus (fuzz/corpus/<target>/). New inputs go to a temporary directory, so the tree stays
# clean; a crash stops the run and leaves its input in target/fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET…]
# FUZZ_SANITIZER picks the sanitizer (none by default: the project's code forbids `unsafe`, so
# coverage guidance is what finds its bugs; `make fuzz` uses address, for the dependencies).
# Needs the nightly toolchain and cargo-fuzz, which scripts/setup.sh puts in target/tools.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
shift || true
root=$PWD
fuzz="$root/target/tools/bin/cargo-fuzz"
export RUSTUP_TOOLCHAIN=nightly
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(cd fuzz && "$fuzz" list)
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd fuzz
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-none}")
# One build for every target (release, with debug assertions).
"$fuzz" build "${sanitizer[@]}" --target-dir "$root/target/fuzz"
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "$root/target/fuzz/artifacts/$t"
  echo "fuzz: $t for ${seconds}s"
  status=0
  "$fuzz" run "${sanitizer[@]}" --target-dir "$root/target/fuzz" "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$root/target/fuzz/artifacts/$t/" >"$scratch/$t.log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|new_units_added)' "$scratch/$t.log" | tr '\n' ' '
  echo
  if [[ $status -ne 0 ]]; then
    tail -40 "$scratch/$t.log" >&2
    echo "fuzz: $t failed (exit $status); the input is in target/fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
