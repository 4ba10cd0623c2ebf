# Countersign task runner. `make test` is the one command that sets up and runs every check.

CARGO ?= cargo

.PHONY: test test-core demo demo-cli setup check ui fmt lint unit broker-postgres fuzz-short fuzz e2e screenshots bundle appimage measure-app bench deny

## Set up the machine, then run the format check, clippy and every test.
test: setup check

## The core crates' tests only (protocol, broker, approver, CLI): no desktop build, no webkit.
test-core: setup
	scripts/session.sh $(CARGO) test --locked --workspace --exclude countersign-desktop
	$(MAKE) broker-postgres PACKAGES="--workspace --exclude countersign-desktop"

## The desktop app in demo mode: embedded broker, simulated agents, development authenticator.
demo:
	@scripts/demo-app.sh

## The command-line demo: a broker, simulated agents, and the countersign CLI.
demo-cli:
	@scripts/demo.sh

setup:
	@scripts/setup.sh

## Each stage in turn, with how long it took (the CI log shows where the time goes).
CHECK_STAGES := ui fmt lint unit fuzz-short e2e bundle
check:
	@for stage in $(CHECK_STAGES); do \
	  start=$$(date +%s); \
	  $(MAKE) --no-print-directory $$stage || exit 1; \
	  echo "== stage $$stage: $$(( $$(date +%s) - start )) s"; \
	done

## The UI: formatting (Prettier), type check, unit tests (Vitest), and the bundle the app
## embeds (ui/dist). `npm --prefix ui run format` formats.
ui:
	npm --prefix ui run format:check
	npm --prefix ui run check
	npm --prefix ui test
	npm --prefix ui run build

## The UI bundle, built again only when a source of it is newer (the app embeds it).
ui/dist/index.html: ui/index.html ui/package-lock.json ui/vite.config.ts ui/svelte.config.js $(shell find ui/src -type f)
	npm --prefix ui run build

fmt:
	$(CARGO) fmt --all --check

## Clippy, no unused dependency, and the API documentation builds without a warning.
lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	target/tools/bin/cargo-machete
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --workspace --locked

## Every workspace build of the tests has the desktop app in demo mode with its UI embedded,
## as the end-to-end run needs it: one feature set is one build, so `make e2e` links the app
## from what the tests built instead of building the workspace again with other features.
TEST_FEATURES := --features countersign-desktop/demo,countersign-desktop/custom-protocol

## Tests run inside a private D-Bus session with an unlocked gnome-keyring (scripts/session.sh).
unit: ui/dist/index.html
	scripts/session.sh $(CARGO) test --workspace --locked $(TEST_FEATURES)
	$(MAKE) broker-postgres

## The broker's suite again on PostgreSQL: a cluster the tests start (initdb, pg_ctl) in a
## temporary directory on a free port, and stop when they end. PACKAGES is the package set of
## the build before it: the same set means the same features, so nothing is built again.
PACKAGES ?= --workspace $(TEST_FEATURES)
broker-postgres:
	COUNTERSIGN_TEST_STORE=postgres scripts/session.sh $(CARGO) test --locked $(PACKAGES) --test broker

## Every fuzz target for a few seconds from its committed corpus (scripts/fuzz.sh).
fuzz-short:
	scripts/fuzz.sh 10

## Every fuzz target for longer: FUZZ_SECONDS each (default 300), with AddressSanitizer.
FUZZ_SECONDS ?= 300
fuzz:
	FUZZ_SANITIZER=address scripts/fuzz.sh $(FUZZ_SECONDS)

## The real desktop app, driven through WebDriver in demo mode; its screenshots go to
## target/e2e-screenshots/ (the tree stays clean). Built as `make unit` builds the tests (the
## same packages, targets and features, so after it only the app's binary is linked), and copied
## aside: a `cargo test` with other features rebuilds target/debug's binary.
e2e: ui/dist/index.html
	$(CARGO) build --locked --workspace --bins --tests $(TEST_FEATURES)
	cp target/debug/countersign-desktop target/countersign-desktop-e2e
	scripts/session.sh python3 tests/e2e/run.py target/countersign-desktop-e2e

## The same run, refreshing the README's screenshots in docs/screenshots/.
screenshots:
	COUNTERSIGN_SCREENSHOTS=$(CURDIR)/docs/screenshots $(MAKE) e2e

## The release build, packaged as a .deb (target/release/bundle/deb/), and checked.
bundle:
	cd src-tauri && ../ui/node_modules/.bin/tauri build --ci --bundles deb
	scripts/session.sh scripts/check-bundle.sh "$$(ls -t target/release/bundle/deb/*.deb | head -1)"

## The AppImage. The Tauri bundler fetches its tools (AppRun, linuxdeploy) from GitHub, so this
## needs a machine that reaches github.com (or those tools placed in ~/.cache/tauri).
appimage:
	cd src-tauri && ../ui/node_modules/.bin/tauri build --ci --bundles appimage

## Cold start, idle memory and CPU of the app beside a minimal Tauri 2 app (figures only).
## Both are release builds (the demo needs its feature; the shipped .deb has none).
measure-app:
	$(CARGO) build --release --locked -p countersign-desktop --features demo,custom-protocol
	cp target/release/countersign-desktop target/countersign-desktop-measure
	CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --release --manifest-path bench/minimal-tauri/Cargo.toml
	scripts/session.sh python3 tests/e2e/measure.py target/countersign-desktop-measure target/release/minimal-tauri

## Benchmarks: figures, never pass/fail.
bench:
	$(CARGO) bench -p countersign-protocol --bench verify
	$(CARGO) bench -p countersign-broker --bench broker
	$(CARGO) bench -p countersign-approver --bench history
	$(CARGO) bench -p countersign-gateway --bench gateway

## Licence and advisory checks (installs cargo-deny on first use).
deny:
	@command -v cargo-deny >/dev/null || $(CARGO) install --locked cargo-deny
	$(CARGO) deny check
