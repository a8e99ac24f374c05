//! The Host block that connects ssh to a debug session.

use std::path::PathBuf;

use crate::quote::{config_arg, expanded_arg, proxy_command};
use crate::{Result, SshConfigError};

/// Seconds between ssh's keepalives through the tunnel, as Flyte's client sets it.
pub const SERVER_ALIVE_INTERVAL: u32 = 30;
/// Unanswered keepalives ssh tolerates before it gives up: 30 s x 32 = 16 min, past the
/// bridge's default grace period (15 min) for a resumable tunnel, so ssh outlasts any outage
/// the tunnel can still resume from (the tunnel itself ends the connection, and so ssh, once
/// its session is lost).
pub const SERVER_ALIVE_COUNT_MAX: u32 = 32;

/// How the block checks the server's host key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// The server's key was published (and written to `known_hosts_file` under
    /// `host_key_alias`): `StrictHostKeyChecking yes`.
    Pinned,
    /// The key is not known in advance: ssh records it on the first connection and refuses a
    /// different one afterwards (`StrictHostKeyChecking accept-new`).
    LearnOnFirstUse,
}

/// Everything a debug Host block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugHost {
    /// The name users type: `ssh <alias>`.
    pub alias: String,
    pub user: String,
    pub identity_file: PathBuf,
    /// Absolute path of the `flyte-run` binary that runs `tunnel`.
    pub proxy_program: PathBuf,
    pub wss_url: String,
    /// What `tunnel` gets after the URL besides the headers file (how to reach the route: a
    /// CA file, a proxy). Never secrets: the `ProxyCommand` is visible in the process list.
    pub tunnel_args: Vec<String>,
    pub headers_file: PathBuf,
    /// The name the server's key is recorded under in `known_hosts_file`.
    pub host_key_alias: String,
    pub known_hosts_file: PathBuf,
    pub host_key_check: HostKeyCheck,
}

/// Check a Host alias: a single ssh pattern that matches only itself.
pub fn validate_alias(alias: &str) -> Result<()> {
    let invalid = |reason: &'static str| {
        Err(SshConfigError::InvalidAlias {
            alias: alias.to_owned(),
            reason,
        })
    };
    if alias.is_empty() {
        return invalid("it is empty");
    }
    if alias.chars().any(char::is_whitespace) {
        return invalid("it contains whitespace, which would make it several Host patterns");
    }
    if alias.chars().any(|c| matches!(c, '*' | '?' | '!' | ',')) {
        return invalid("it contains a wildcard or pattern character (* ? ! ,)");
    }
    if alias.contains('%') {
        return invalid("it contains '%', which ssh expands as a token");
    }
    if alias
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\' | '#' | '='))
    {
        return invalid("it contains a quote, backslash, '#', '=' or a control character");
    }
    if alias.starts_with('-') {
        return invalid("it starts with '-', which ssh would read as an option");
    }
    Ok(())
}

impl DebugHost {
    /// The block's lines, without line endings and without markers.
    pub fn lines(&self) -> Result<Vec<String>> {
        validate_alias(&self.alias)?;
        if self.host_key_alias.is_empty()
            || self
                .host_key_alias
                .chars()
                .any(|c| c.is_whitespace() || c == ',')
        {
            return Err(SshConfigError::InvalidValue {
                option: "HostKeyAlias",
                reason: format!("{:?} must be one word without commas", self.host_key_alias),
            });
        }
        let path = |p: &PathBuf| p.display().to_string();
        let program = path(&self.proxy_program);
        let headers = path(&self.headers_file);
        let mut words = vec![
            program.as_str(),
            "tunnel",
            self.wss_url.as_str(),
            "--http-headers-file",
            headers.as_str(),
        ];
        words.extend(self.tunnel_args.iter().map(String::as_str));
        let proxy = proxy_command(&words)?;
        let mut lines = vec![
            format!("Host {}", self.alias),
            format!("  User {}", config_arg("User", &self.user)?),
            format!(
                "  IdentityFile {}",
                expanded_arg("IdentityFile", &path(&self.identity_file))?
            ),
            "  IdentitiesOnly yes".to_owned(),
            format!("  ProxyCommand {proxy}"),
            format!("  ServerAliveInterval {SERVER_ALIVE_INTERVAL}"),
            format!("  ServerAliveCountMax {SERVER_ALIVE_COUNT_MAX}"),
            format!(
                "  HostKeyAlias {}",
                config_arg("HostKeyAlias", &self.host_key_alias)?
            ),
            format!(
                "  UserKnownHostsFile {}",
                expanded_arg("UserKnownHostsFile", &path(&self.known_hosts_file))?
            ),
        ];
        match self.host_key_check {
            HostKeyCheck::Pinned => lines.push("  StrictHostKeyChecking yes".to_owned()),
            HostKeyCheck::LearnOnFirstUse => {
                lines.push(
                    "  # The server did not publish its host key: ssh records it on the first connection"
                        .to_owned(),
                );
                lines.push("  # and refuses any other key for this host afterwards.".to_owned());
                lines.push("  StrictHostKeyChecking accept-new".to_owned());
            }
        }
        Ok(lines)
    }

    /// The block as text, one `\n` after each line: what `ssh::render` shows and what a user can
    /// paste into a config by hand.
    pub fn render(&self) -> Result<String> {
        Ok(crate::model::join_lines(&self.lines()?))
    }
}
