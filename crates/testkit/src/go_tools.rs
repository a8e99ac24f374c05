//! Test infrastructure built from Go modules: each tool is `go install`ed once, at a pinned
//! version, into a cache outside the repository (`$FLYTE_RUN_TOOLS`, else
//! `~/.cache/flyte-run-tools`), by `cargo xtask ci` when it is missing.

use std::path::PathBuf;

/// A tool: its name here, the Go package and the version it is built from.
#[derive(Debug, Clone, Copy)]
pub struct GoTool {
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
}

/// A real OpenID Connect provider: zitadel/oidc's example OP (authorization code with PKCE for
/// its `native` client, refresh tokens with `offline_access`, a login form; users
/// `test-user@localhost` / `verysecure`).
pub const OIDC_PROVIDER: GoTool = GoTool {
    name: "oidc-example-op",
    package: "github.com/zitadel/oidc/v3/example/server",
    version: "v3.52.0",
};

/// Every tool `cargo xtask ci` builds.
pub const GO_TOOLS: &[GoTool] = &[OIDC_PROVIDER];

/// The cache the tools are built into.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLYTE_RUN_TOOLS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/flyte-run-tools")
}

impl GoTool {
    /// Where `go install` puts it: one directory per name and version, so a new pin is a new
    /// build and never a stale binary.
    pub fn bin_dir(&self) -> PathBuf {
        tools_dir().join(format!("{}-{}", self.name, self.version))
    }

    /// The built binary (`go install` names it after the package's last element).
    pub fn binary(&self) -> PathBuf {
        let file = self.package.rsplit('/').next().unwrap_or(self.name);
        self.bin_dir().join(file)
    }

    /// The built binary, or a panic saying how to build it.
    pub fn require(&self) -> PathBuf {
        let binary = self.binary();
        assert!(
            binary.exists(),
            "{} is missing at {}: run `cargo xtask ci` (it builds {}@{} with go install)",
            self.name,
            binary.display(),
            self.package,
            self.version
        );
        binary
    }
}
