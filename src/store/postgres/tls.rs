//! TLS for the database connection: rustls with the ring provider, one client
//! configuration per `sslmode`.
//!
//! * disable → no TLS at all (the caller uses `NoTls`).
//! * prefer / require → encrypted, but any certificate is accepted, as libpq does;
//!   whether TLS is optional is the driver's `sslmode` (prefer falls back to
//!   plaintext when the server has no TLS, require fails).
//! * verify-ca → the chain must lead to a root in `sslrootcert` (or webpki-roots);
//!   the host name is not compared.
//! * verify-full → chain and host name.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::config::{ParsedUrl, SslMode};
use crate::store::StoreError;

/// The client configuration for `url.ssl_mode`; `None` for disable.
pub fn client_config(url: &ParsedUrl) -> Result<Option<ClientConfig>, StoreError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::engine(format!("TLS setup: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match url.ssl_mode {
        SslMode::Disable => return Ok(None),
        SslMode::Prefer | SslMode::Require => Arc::new(AcceptAnyCertificate { provider }),
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = Arc::new(root_store(url)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| StoreError::engine(format!("TLS setup: {e}")))?;
            if url.ssl_mode == SslMode::VerifyCa {
                Arc::new(IgnoreHostName { inner: webpki })
            } else {
                webpki
            }
        }
    };
    Ok(Some(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// The roots from `sslrootcert` (PEM), or webpki-roots when there is none (or it is
/// libpq's `system`).
fn root_store(url: &ParsedUrl) -> Result<RootCertStore, StoreError> {
    let mut roots = RootCertStore::empty();
    match &url.root_cert {
        Some(path) if path.as_os_str() != "system" => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| StoreError::engine(format!("sslrootcert {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    StoreError::engine(format!("sslrootcert {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::engine(format!("sslrootcert {}: {e}", path.display()))
                })?;
            }
            if roots.is_empty() {
                return Err(StoreError::engine(format!(
                    "sslrootcert {} holds no certificate",
                    path.display()
                )));
            }
        }
        _ => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// prefer/require: encryption against passive listeners only, as in libpq. The
/// handshake signature is still checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

/// verify-ca: webpki checks the chain first and the name last, so a name mismatch
/// reported by it means the chain itself was good.
#[derive(Debug)]
struct IgnoreHostName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
