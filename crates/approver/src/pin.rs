//! Pinning a broker's TLS identity. At pairing, the broker's certificate is either checked
//! against a fingerprint the administrator handed over (`--fingerprint`), or — for a
//! certificate from a public CA — verified as usual and its fingerprint recorded. From then on
//! the broker is reached only when it presents exactly that certificate, whoever signed it.
//!
//! The fingerprint is the SHA-256 of the leaf certificate (DER), as
//! `openssl x509 -noout -fingerprint -sha256` prints it.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses hex, with or without colons and an optional `sha256:` prefix, any case.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::BadFingerprint(text.to_owned());
        let trimmed = text.trim();
        let body = trimmed
            .strip_prefix("sha256:")
            .or_else(|| trimmed.strip_prefix("SHA256:"))
            .or_else(|| trimmed.strip_prefix("sha256 Fingerprint="))
            .or_else(|| trimmed.strip_prefix("SHA256 Fingerprint="))
            .unwrap_or(trimmed);
        let hex: String = body.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Verifies the broker's certificate: by its pin when there is one, otherwise with the public
/// web PKI, recording what it saw.
#[derive(Debug)]
pub(crate) struct PinningVerifier {
    pin: Option<Fingerprint>,
    seen: Arc<Mutex<Option<Fingerprint>>>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl PinningVerifier {
    pub(crate) fn new(pin: Option<Fingerprint>) -> Result<(Self, Arc<Mutex<Option<Fingerprint>>>)> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::Http(format!("TLS setup: {e}")))?;
        let seen = Arc::new(Mutex::new(None));
        Ok((
            Self {
                pin,
                seen: seen.clone(),
                webpki,
                provider,
            },
            seen,
        ))
    }

    /// A rustls client configuration using this verifier.
    pub(crate) fn client_config(self) -> Result<rustls::ClientConfig> {
        let provider = self.provider.clone();
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Http(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self))
            .with_no_client_auth())
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        match self.pin {
            Some(pin) if pin == presented => Ok(ServerCertVerified::assertion()),
            Some(pin) => Err(rustls::Error::General(format!(
                "the broker's certificate ({presented}) does not match the pinned fingerprint \
                 ({pin}); if the broker's certificate was renewed, pair again"
            ))),
            None => {
                self.webpki.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )?;
                if let Ok(mut seen) = self.seen.lock() {
                    *seen = Some(presented);
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_usual_spellings() {
        let fp = Fingerprint([0xab; 32]);
        let colons = fp.to_string();
        assert_eq!(Fingerprint::parse(&colons).unwrap(), fp);
        assert_eq!(Fingerprint::parse(&colons.to_lowercase()).unwrap(), fp);
        assert_eq!(
            Fingerprint::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            fp
        );
        assert_eq!(
            Fingerprint::parse(&format!("SHA256 Fingerprint={colons}")).unwrap(),
            fp
        );
        assert!(Fingerprint::parse("ab:cd").is_err());
        assert!(Fingerprint::parse(&"zz".repeat(32)).is_err());
    }
}
