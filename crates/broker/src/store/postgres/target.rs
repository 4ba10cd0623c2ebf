//! Where the database is and how the broker talks to it: the store's URL and its TLS.
//!
//! The URL is libpq's, in either form (`postgres://user@host:port/db?key=value&…` or
//! `host=… dbname=… key=value …`), read by tokio-postgres, which does not know two of libpq's
//! TLS parameters; this module takes them out first:
//! - `sslrootcert=PATH`: a PEM file of the certificate authorities the server's certificate
//!   must chain to. Without it, the public web roots (Mozilla's, from `webpki-roots`).
//! - `sslmode=verify-ca` and `sslmode=verify-full`: TLS required, as `require`.
//!
//! Whenever a connection uses TLS, the server's certificate is verified in full, chain and host
//! name, whatever the mode: `require` here is libpq's `verify-full`, and `prefer` (the
//! default) uses TLS when the server offers it and verifies it as well. A certificate that
//! cannot be verified ends the connection; it is never used unverified. `sslmode=disable` sends
//! everything in clear: keep it to loopback. SCRAM authentication is bound to the TLS channel
//! (`tls-server-end-point`) when the server supports it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{Result, StoreError};

/// The stream of a connection, with or without TLS.
type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// A database to connect to, and the TLS to connect with.
#[derive(Clone)]
pub(super) struct Target {
    pub(super) config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl Target {
    /// Reads `url`. A malformed URL, an unknown parameter or an unreadable `sslrootcert` is
    /// [`StoreError::Config`].
    pub(super) fn parse(url: &str) -> Result<Self> {
        let (rest, root_cert) = take_tls_params(url)?;
        let config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| StoreError::Config(format!("the store URL: {e}")))?;
        let roots = match root_cert {
            Some(path) => roots_from(&path)?,
            None => rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS to the database: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// A new connection; the caller drives its [`Connection`].
    pub(super) async fn connect(
        &self,
    ) -> std::result::Result<(Client, Connection<Socket, Stream>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }
}

/// The certificates of a PEM file, as trust anchors.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore> {
    let unreadable = |e: &dyn std::fmt::Display| {
        StoreError::Config(format!("sslrootcert {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if certs.is_empty() {
        return Err(unreadable(&"no certificate in the file"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| unreadable(&e))?;
    }
    Ok(roots)
}

/// `url` without `sslrootcert`, with `sslmode=verify-*` as `require`; and `sslrootcert`'s
/// path.
fn take_tls_params(url: &str) -> Result<(String, Option<PathBuf>)> {
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<Option<String>> {
        match (key, value) {
            ("sslrootcert", path) => {
                if path.is_empty() {
                    return Err(StoreError::Config("sslrootcert is empty".into()));
                }
                root_cert = Some(PathBuf::from(path));
                Ok(None)
            }
            ("sslmode", "verify-ca" | "verify-full") => Ok(Some("require".into())),
            _ => Ok(Some(value.to_owned())),
        }
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        rewrite_url_query(url, &mut take)?
    } else {
        rewrite_key_values(url, &mut take)?
    };
    Ok((rest, root_cert))
}

type Take<'a> = dyn FnMut(&str, &str) -> Result<Option<String>> + 'a;

/// The URL form: the query's `key=value` pairs (percent-encoded), the others kept as written.
fn rewrite_url_query(url: &str, take: &mut Take<'_>) -> Result<String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok(url.to_owned());
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode(value)?;
        match take(key, &decoded)? {
            Some(new) if new == decoded => kept.push(pair.to_owned()),
            Some(new) => kept.push(format!("{key}={new}")),
            None => {}
        }
    }
    Ok(if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    })
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::Config(format!("the store URL: bad escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| StoreError::Config(format!("the store URL: {s:?} is not UTF-8")))
}

/// The `key=value` form: values bare or single-quoted (with `\'` and `\\`); the others kept
/// as written.
fn rewrite_key_values(s: &str, take: &mut Take<'_>) -> Result<String> {
    let malformed = || StoreError::Config(format!("the store URL: cannot read {s:?}"));
    let mut kept: Vec<String> = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').ok_or_else(malformed)?;
        let key = rest[..eq].trim_end();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(malformed());
        }
        let after = rest[eq + 1..].trim_start();
        let (value, raw_len) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next().ok_or_else(malformed)? {
                    (i, '\'') => break i,
                    (_, '\\') => value.push(chars.next().ok_or_else(malformed)?.1),
                    (_, c) => value.push(c),
                }
            };
            (value, end + 2)
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), end)
        };
        let raw = &after[..raw_len];
        match take(key, &value)? {
            Some(new) if new == value => kept.push(format!("{key}={raw}")),
            Some(new) => kept.push(format!("{key}='{}'", quote(&new))),
            None => {}
        }
        rest = after[raw_len..].trim_start();
    }
    Ok(kept.join(" "))
}

fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_form_loses_sslrootcert_and_keeps_the_rest_as_written() {
        let (rest, root) = take_tls_params(
            "postgres://u:p%40ss@db.example:5433/cs?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem&options=-c%20a%3Db",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%40ss@db.example:5433/cs?sslmode=require&options=-c%20a%3Db"
        );
        assert_eq!(root.unwrap(), Path::new("/etc/ca x.pem"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(config.get_password(), Some(&b"p@ss"[..]));

        let (rest, root) = take_tls_params("postgres://h/db?sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            (rest.as_str(), root.unwrap()),
            ("postgres://h/db", PathBuf::from("/ca.pem"))
        );
        let (rest, root) = take_tls_params("postgresql://h/db").unwrap();
        assert_eq!((rest.as_str(), root), ("postgresql://h/db", None));
    }

    #[test]
    fn the_key_value_form_loses_sslrootcert_and_keeps_quoted_values() {
        let (rest, root) = take_tls_params(
            "host=db.example password='it\\'s a secret' sslmode = verify-ca  sslrootcert='/etc/my ca.pem' dbname=cs",
        )
        .unwrap();
        assert_eq!(
            rest,
            "host=db.example password='it\\'s a secret' sslmode='require' dbname=cs"
        );
        assert_eq!(root.unwrap(), Path::new("/etc/my ca.pem"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's a secret"[..]));
        assert_eq!(config.get_dbname(), Some("cs"));
        assert_eq!(
            config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn malformed_tls_parameters_are_config_errors() {
        for url in [
            "postgres://h/db?sslrootcert=",
            "postgres://h/db?sslrootcert=%zz",
            "host=h sslrootcert='/unterminated",
            "host=h justakey",
            "postgres://h/db?sslmode=allow",
            "postgres://h/db?sslcert=/client.pem",
        ] {
            assert!(
                matches!(Target::parse(url), Err(StoreError::Config(_))),
                "{url}"
            );
        }
        let missing = Target::parse("postgres://h/db?sslrootcert=/nonexistent/ca.pem");
        assert!(
            matches!(&missing, Err(StoreError::Config(m)) if m.contains("/nonexistent/ca.pem")),
            "{:?}",
            missing.err()
        );
    }
}
