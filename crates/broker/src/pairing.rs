//! Pairing codes: what `countersign-broker pair` issues to an owner and `POST /v1/pair` uses up.
//! Stored only as a hash, valid once, until they expire.

use crate::config::secret_hash;

/// Issues a one-time pairing code for `owner`'s next approver, valid for `ttl_secs`: 10
/// characters from an alphabet without look-alikes (about 50 bits), stored only as a hash.
pub fn issue_pairing_code(
    store: &dyn crate::store::Store,
    owner: &str,
    now: i64,
    ttl_secs: i64,
) -> Result<String, crate::store::StoreError> {
    use rand_core::RngCore as _;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 10];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let code = format!("{}-{}", &chars[..5], &chars[5..]);
    store.add_pairing_code(&secret_hash(&normalize_code(&code)), owner, now + ttl_secs)?;
    Ok(code)
}

/// Normalises a pairing code as typed by a person: case and separators do not matter.
pub fn normalize_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}
