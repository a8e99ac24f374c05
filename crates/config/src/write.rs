//! Writing Flyte's `config.yaml`: the keys Flyte's CLI and SDK read, every value a YAML
//! double-quoted scalar (a JSON string is one), so paths and names may hold anything.

use crate::AuthType;

/// What a Flyte `config.yaml` written by flyte-run says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlyteFile {
    /// `dns:///host[:port]`, as Flyte writes endpoints.
    pub endpoint: String,
    /// Plain http (Flyte's `admin.insecure`).
    pub insecure: bool,
    pub ca_cert_file_path: Option<String>,
    /// `None`: Flyte's default (`Pkce`).
    pub auth_type: Option<AuthType>,
    pub client_id: Option<String>,
    pub client_secret_location: Option<String>,
    pub project: String,
    pub domain: String,
}

fn quoted(value: &str) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl FlyteFile {
    /// The file's text, headed by `comment` (one line).
    pub fn render(&self, comment: &str) -> String {
        use std::fmt::Write as _;
        let mut text = format!(
            "# {comment}\nadmin:\n  endpoint: {}\n  insecure: {}\n",
            quoted(&self.endpoint),
            self.insecure
        );
        let mut optional = |key: &str, value: Option<&str>| {
            if let Some(value) = value {
                let _ = writeln!(text, "  {key}: {}", quoted(value));
            }
        };
        optional("caCertFilePath", self.ca_cert_file_path.as_deref());
        optional("authType", self.auth_type.map(AuthType::name));
        optional("clientId", self.client_id.as_deref());
        optional(
            "clientSecretLocation",
            self.client_secret_location.as_deref(),
        );
        let _ = write!(
            text,
            "task:\n  project: {}\n  domain: {}\n",
            quoted(&self.project),
            quoted(&self.domain)
        );
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::disallowed_methods,
        clippy::unwrap_used,
        reason = "tests write their fixtures directly"
    )]
    use super::*;

    #[test]
    fn a_written_file_reads_back_through_the_resolver() {
        let file = FlyteFile {
            endpoint: "dns:///flyte.example.com".into(),
            insecure: false,
            ca_cert_file_path: Some("/path with \"quotes\"/ca.pem".into()),
            auth_type: Some(AuthType::DeviceFlow),
            client_id: None,
            client_secret_location: None,
            project: "ml".into(),
            domain: "development".into(),
        };
        let text = file.render("test");
        only_flytes_keys(&text);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, &text).unwrap();
        let resolved = crate::resolve(&crate::Inputs {
            flyte_config: Some((&path, crate::Place::Named)),
            settings: crate::Layer::default(),
            env: &|_| None,
            flags: crate::Layer::default(),
        })
        .unwrap();
        let text_of = |key: &str| resolved.text(key).map(|s| s.value);
        assert_eq!(
            text_of(crate::ENDPOINT).as_deref(),
            Some("dns:///flyte.example.com")
        );
        assert_eq!(
            text_of(crate::CA_CERT_FILE_PATH).as_deref(),
            Some("/path with \"quotes\"/ca.pem")
        );
        assert_eq!(
            resolved.auth_type().unwrap().map(|a| a.value),
            Some(AuthType::DeviceFlow)
        );
        assert_eq!(text_of(crate::PROJECT).as_deref(), Some("ml"));
    }

    /// The keys are Flyte's and no others.
    fn only_flytes_keys(text: &str) {
        for line in text.lines().filter(|l| l.starts_with("  ")) {
            let key = line.trim().split(':').next().unwrap();
            assert!(
                [
                    "endpoint",
                    "insecure",
                    "caCertFilePath",
                    "authType",
                    "clientId",
                    "clientSecretLocation",
                    "project",
                    "domain"
                ]
                .contains(&key),
                "{key}"
            );
        }
    }
}
