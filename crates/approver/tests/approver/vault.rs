//! Key custody in the real OS keyring (gnome-keyring in a private D-Bus session; see
//! scripts/session.sh): secrets round-trip, the device key is made once and kept, nothing lands
//! in files, and without a keyring the error says so.

use countersign_approver::history::History;
use countersign_approver::{Error, Vault};

fn profile() -> String {
    format!("test-{}", countersign_protocol::hash::b64url(&rand_bytes()))
}

fn rand_bytes() -> [u8; 9] {
    let mut b = [0u8; 9];
    getrandom(&mut b);
    b
}

fn getrandom(buf: &mut [u8]) {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(buf)
        .unwrap();
}

#[test]
fn secrets_round_trip_through_the_os_keyring() {
    let vault = Vault::platform(&profile()).unwrap();
    assert_eq!(vault.get("broker-credential").unwrap(), None);
    vault.put("broker-credential", b"s3cret\x00bytes").unwrap();
    assert_eq!(
        vault.get("broker-credential").unwrap().unwrap().as_slice(),
        b"s3cret\x00bytes"
    );
    vault.put("broker-credential", b"replaced").unwrap();
    assert_eq!(
        vault.get("broker-credential").unwrap().unwrap().as_slice(),
        b"replaced"
    );
    vault.delete("broker-credential").unwrap();
    assert_eq!(vault.get("broker-credential").unwrap(), None);
    vault.delete("broker-credential").unwrap();
}

#[test]
fn device_keys_are_made_per_broker_kept_in_the_keyring_and_never_in_files() {
    let name = profile();
    let dir = tempfile::tempdir().unwrap();
    let (key_name, first) = Vault::platform(&name).unwrap().new_device_key().unwrap();
    // Another process would open its own connection: so does this one.
    let again = Vault::platform(&name)
        .unwrap()
        .device_key(&key_name)
        .unwrap();
    assert_eq!(first.public_jwk(), again.public_jwk());
    // Each broker gets a key of its own.
    let (second_name, second) = Vault::platform(&name).unwrap().new_device_key().unwrap();
    assert_ne!(key_name, second_name);
    assert_ne!(first.public_jwk(), second.public_jwk());
    // A different profile does not see it.
    assert!(matches!(
        Vault::platform(&profile()).unwrap().device_key(&key_name),
        Err(Error::KeyringCorrupt(_))
    ));

    // The app's files hold no trace of the secret.
    let mut history = History::open(&dir.path().join("history.db")).unwrap();
    history.set_setting("written", "yes").unwrap();
    drop(history);
    let secret = first.secret();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(32).any(|w| w == secret.as_slice()),
            "secret found in a file"
        );
    }
}

/// Run by the test below in a child process without a session bus.
#[test]
#[ignore = "run by without_a_keyring_the_error_says_what_to_start"]
fn probe_keyring() {
    match Vault::platform("probe") {
        Ok(_) => println!("PROBE: ok"),
        Err(e) => println!("PROBE: {} | {e}", e.code()),
    }
}

#[test]
fn without_a_keyring_the_error_says_what_to_start() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "vault::probe_keyring",
            "--nocapture",
        ])
        .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("PROBE:"))
        .unwrap_or_default();
    assert!(line.starts_with("PROBE: keyring_unavailable"), "{stdout}");
    assert!(line.contains("Secret Service"), "{line}");
    let _ = Error::KeyringUnavailable(String::new());
}
