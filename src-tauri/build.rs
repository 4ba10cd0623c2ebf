include!("src/command_names.rs");

fn main() {
    let manifest = tauri_build::AppManifest::new().commands(COMMANDS);
    if let Err(e) = tauri_build::try_build(tauri_build::Attributes::new().app_manifest(manifest)) {
        // A build script reports failure by panicking; there is no other channel.
        #[expect(clippy::panic, reason = "build scripts fail by panicking")]
        {
            panic!("tauri-build: {e:#}");
        }
    }
}
