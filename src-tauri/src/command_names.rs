// Every command the app registers, named once. `build.rs` turns each into an `allow-…`
// permission, `commands::handler` registers them, and a test checks that the capability grants
// exactly these to the main window. (Included by `build.rs` too, so no doc comments here.)

/// Calls the macro `$then` with the name of every command.
macro_rules! with_commands {
    ($then:ident) => {
        $then! {
            pending,
            item,
            approve,
            approve_all,
            approve_bounded,
            bounded_grants,
            revoke_bounded,
            deny,
            deny_all,
            submit_pin,
            history,
            verify_history,
            settings,
            set_privacy,
            pause_notifications,
            pair,
            remove_broker,
            add_authenticator,
            rename_authenticator,
            remove_authenticator,
            set_autostart,
            take_pair_link,
            export_history,
        }
    };
}

macro_rules! command_names {
    ($($name:ident),* $(,)?) => {
        &[$(stringify!($name)),*]
    };
}

/// Every command's name.
pub const COMMANDS: &[&str] = with_commands!(command_names);
