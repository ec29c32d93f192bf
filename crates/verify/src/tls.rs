//! The TLS check: a real handshake to the client host with rustls (the platform's roots plus
//! `--ca`), recording the chain the server presented so a failure can say what was wrong with
//! it (which names, which dates), and an expiry classification.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Days before expiry from which the check warns (cert-manager renews 30 days before).
pub const WARN_DAYS: i64 = 14;

/// How far a certificate is from its `notAfter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Expired { days_ago: i64 },
    Soon { days: i64 },
    Valid { days: i64 },
}

/// `not_after` and `now` in Unix seconds.
pub fn classify(not_after: i64, now: i64) -> Expiry {
    let left = not_after - now;
    if left <= 0 {
        Expiry::Expired {
            days_ago: -left / 86_400,
        }
    } else if left < WARN_DAYS * 86_400 {
        Expiry::Soon {
            days: left / 86_400,
        }
    } else {
        Expiry::Valid {
            days: left / 86_400,
        }
    }
}

/// What the leaf certificate says.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub names: Vec<String>,
    pub issuer: String,
    pub not_after_unix: i64,
    pub not_after: String,
}

pub fn parse_leaf(der: &[u8]) -> Option<Leaf> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    GeneralName::IPAddress(ip) => Some(format!("IP {ip:?}")),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|c| c.as_str().ok().map(str::to_owned)),
        );
    }
    Some(Leaf {
        names,
        issuer: cert.issuer().to_string(),
        not_after_unix: cert.validity().not_after.timestamp(),
        not_after: cert.validity().not_after.to_string(),
    })
}

/// PEM bundle to DER certificates.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    let certs = certs.map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// The handshake's outcome: the presented leaf (if any) and the verification error (if any).
pub struct Probe {
    pub leaf: Option<Leaf>,
    pub error: Option<String>,
}

/// Connects to `addr`, sends SNI `host`, verifies the chain and the name.
pub fn probe(host: &str, addr: SocketAddr, extra_roots: Vec<CertificateDer<'static>>) -> Probe {
    let seen = Arc::new(Mutex::new(None));
    let outcome = handshake(host, addr, extra_roots, seen.clone());
    let leaf = seen
        .lock()
        .expect("lock")
        .take()
        .and_then(|d: Vec<u8>| parse_leaf(&d));
    Probe {
        error: outcome.err().map(|e| explain(host, &e)),
        leaf,
    }
}

fn handshake(
    host: &str,
    addr: SocketAddr,
    extra_roots: Vec<CertificateDer<'static>>,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
) -> Result<(), Failure> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let inner =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(Failure::Tls)?;
    let verifier = Arc::new(Recording { inner, seen });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Failure::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).map_err(|e| Failure::Io(e.to_string()))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(Failure::Tls)?;
    let timeout = Duration::from_secs(10);
    let mut sock = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Failure::Io(format!("cannot connect to {addr}: {e}")))?;
    sock.set_read_timeout(Some(timeout)).ok();
    sock.set_write_timeout(Some(timeout)).ok();
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut sock) {
            return Err(
                match e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
                    Some(t) => Failure::Tls(t.clone()),
                    None => Failure::Io(e.to_string()),
                },
            );
        }
    }
    let _ = conn.writer().flush();
    let _ = sock.read(&mut [0u8; 0]);
    Ok(())
}

enum Failure {
    Tls(TlsError),
    Io(String),
}

/// One sentence per failure, naming what the operator has to change.
fn explain(host: &str, f: &Failure) -> String {
    let e = match f {
        Failure::Io(s) => return s.clone(),
        Failure::Tls(e) => e,
    };
    match e {
        TlsError::InvalidCertificate(c) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the certificate is not valid yet".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("the certificate is not valid for {host}")
            }
            CertificateError::UnknownIssuer => {
                "the chain does not lead to a trusted CA (a private CA: pass it with --ca FILE)"
                    .into()
            }
            CertificateError::Revoked => "the certificate is revoked".into(),
            other => format!("the certificate is invalid: {other:?}"),
        },
        other => format!("TLS handshake failed: {other}"),
    }
}

/// The platform verifier, remembering the leaf it was shown.
#[derive(Debug)]
struct Recording {
    inner: rustls_platform_verifier::Verifier,
    seen: Arc<Mutex<Option<Vec<u8>>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        *self.seen.lock().expect("lock") = Some(end_entity.to_vec());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;

    #[test]
    fn expiry_is_classified_by_days_left() {
        let now = 1_800_000_000;
        assert_eq!(
            classify(now - 3 * DAY, now),
            Expiry::Expired { days_ago: 3 }
        );
        assert_eq!(classify(now, now), Expiry::Expired { days_ago: 0 });
        assert_eq!(classify(now + 5 * DAY, now), Expiry::Soon { days: 5 });
        assert_eq!(
            classify(now + WARN_DAYS * DAY - 1, now),
            Expiry::Soon { days: 13 }
        );
        assert_eq!(
            classify(now + WARN_DAYS * DAY, now),
            Expiry::Valid { days: 14 }
        );
        assert_eq!(classify(now + 90 * DAY, now), Expiry::Valid { days: 90 });
    }

    #[test]
    fn a_pem_file_without_certificates_is_refused() {
        assert!(pem_certs(b"not a certificate").is_err());
    }
}
