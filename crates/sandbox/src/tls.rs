//! TLS on the sandbox's API port, for clients that speak only https (Flyte's SDK sends tokens
//! only over TLS): a CA made fresh at each start, whose key never touches the disk, and a
//! server certificate for `127.0.0.1`, `::1` and `localhost` it signs. Clients trust `ca.pem` in the
//! state directory (Flyte's `admin.caCertFilePath`).

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::{Result, SandboxError};

/// The acceptor and the CA certificate clients are to trust (PEM).
pub(crate) struct LoopbackTls {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) ca_pem: String,
}

impl std::fmt::Debug for LoopbackTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackTls").finish_non_exhaustive()
    }
}

fn tls_error(error: impl std::fmt::Display) -> SandboxError {
    SandboxError::Io(format!("TLS setup: {error}"))
}

/// A new CA and a server certificate for the loopback names, served with ALPN `http/1.1`.
pub(crate) fn generate() -> Result<LoopbackTls> {
    let ca_key = KeyPair::generate().map_err(tls_error)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "flyte-run sandbox CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_error)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(tls_error)?;
    let mut server_params = CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ])
    .map_err(tls_error)?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "flyte-run sandbox");
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .map_err(tls_error)?;

    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(tls_error)?
    .with_no_client_auth()
    .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)
    .map_err(tls_error)?;
    // The API is served over HTTP/1.1 (hyper http1), and ALPN says so.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(LoopbackTls {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca_cert.pem(),
    })
}
