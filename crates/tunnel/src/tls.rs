use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;

use crate::{Result, TunnelError};

/// A rustls client config trusting the system's roots plus, optionally, the CAs in `extra_ca`
/// (a PEM file), with the aws-lc-rs provider (the one russh and reqwest use too).
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    // Unreadable system certificates are not fatal: an extra CA may be all the route needs.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let bad = |reason: String| TunnelError::LocalFile {
            what: "the CA file",
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut added = 0;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert.map_err(|e| bad(format!("not PEM certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("it holds no PEM certificate".to_owned()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TunnelError::Protocol {
            detail: format!("TLS setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
