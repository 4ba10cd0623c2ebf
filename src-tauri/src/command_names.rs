/// Every command the app registers; `build.rs` turns each into an `allow-…` permission, and
/// the capability grants exactly these to the main window.
pub const COMMANDS: &[&str] = &[
    "pending",
    "item",
    "approve",
    "deny",
    "submit_pin",
    "history",
    "verify_history",
    "settings",
    "set_privacy",
    "pause_notifications",
    "pair",
    "remove_broker",
    "add_authenticator",
    "rename_authenticator",
    "remove_authenticator",
    "set_autostart",
    "take_pair_link",
    "export_history",
];
