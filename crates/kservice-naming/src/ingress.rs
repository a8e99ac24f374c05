use crate::{NamingError, Result, kservice_name};

/// Where apps are published. With no base domain, apps have no public URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressConfig {
    /// DNS suffix under which Knative publishes services, e.g. `apps.example.com`.
    pub base_domain: Option<String>,
    /// `https` (the default) or `http`.
    pub scheme: Option<String>,
    /// A port to append, when the gateway is not on the scheme's default port.
    pub port: Option<u16>,
}

/// The public URL of an app, matching a Knative domain template of `{{.Name}}.{{.Domain}}`:
/// `scheme://<kservice name>.<base domain>[:port]`, lower-cased. `None` when no base domain is
/// configured.
pub fn public_ingress(
    project: &str,
    domain: &str,
    name: &str,
    config: &IngressConfig,
) -> Result<Option<String>> {
    let Some(base_domain) = config.base_domain.as_deref().filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if let Some(ch) = base_domain
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
    {
        return Err(NamingError::InvalidIngress {
            setting: "base_domain",
            reason: format!(
                "{base_domain:?} contains {ch:?}; use a DNS name such as apps.example.com"
            ),
        });
    }
    let scheme = config.scheme.as_deref().unwrap_or("https");
    if !matches!(scheme, "http" | "https") {
        return Err(NamingError::InvalidIngress {
            setting: "scheme",
            reason: format!("{scheme:?} is neither \"https\" nor \"http\""),
        });
    }
    if config.port == Some(0) {
        return Err(NamingError::InvalidIngress {
            setting: "port",
            reason: "0 is not a port a gateway can listen on".to_owned(),
        });
    }
    let host =
        format!("{}.{base_domain}", kservice_name(project, domain, name)?).to_ascii_lowercase();
    Ok(Some(match config.port {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    }))
}
