//! Test infrastructure built from Go modules: each tool is built once, at a pinned version,
//! into a cache outside the repository (`$FLYTE_RUN_TOOLS`, else `~/.cache/flyte-run-tools`),
//! by `cargo xtask ci` when it is missing.

use std::path::PathBuf;

/// A tool: its name here, the Go package and the version it is built from, and how.
#[derive(Debug, Clone, Copy)]
pub struct GoTool {
    pub name: &'static str,
    pub package: &'static str,
    /// The version of the module the package is in.
    pub version: &'static str,
    pub build: GoBuild,
}

/// How a tool is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoBuild {
    /// `go install package@version`.
    Install,
    /// `go build` of the package inside a build module of ours that requires `module` at the
    /// tool's version: for modules whose go.mod has `replace` directives (which `go install`
    /// refuses). Each replace pointing into the module's `staging/` tree (Kubernetes' own
    /// `k8s.io/*` modules) becomes the published module at `staging_version`.
    InModule {
        module: &'static str,
        staging_version: Option<&'static str>,
    },
}

/// A real OpenID Connect provider: zitadel/oidc's example OP (authorization code with PKCE for
/// its `native` client, refresh tokens with `offline_access`, a login form; users
/// `test-user@localhost` / `verysecure`).
pub const OIDC_PROVIDER: GoTool = GoTool {
    name: "oidc-example-op",
    package: "github.com/zitadel/oidc/v3/example/server",
    version: "v3.52.0",
    build: GoBuild::Install,
};

/// A real Kubernetes API server (what controller-runtime's envtest starts).
pub const KUBE_APISERVER: GoTool = GoTool {
    name: "kube-apiserver",
    package: "k8s.io/kubernetes/cmd/kube-apiserver",
    version: "v1.34.4",
    build: GoBuild::InModule {
        module: "k8s.io/kubernetes",
        staging_version: Some("v0.34.4"),
    },
};

/// The scheduler, so pods land on kwok's node as in a cluster.
pub const KUBE_SCHEDULER: GoTool = GoTool {
    name: "kube-scheduler",
    package: "k8s.io/kubernetes/cmd/kube-scheduler",
    version: "v1.34.4",
    build: GoBuild::InModule {
        module: "k8s.io/kubernetes",
        staging_version: Some("v0.34.4"),
    },
};

/// etcd for the API server. Debian's etcd-server (3.4) lacks the watch progress requests the
/// API server's streaming lists need, so clients such as kwok saw changes only at relists.
pub const ETCD: GoTool = GoTool {
    name: "etcd",
    package: "go.etcd.io/etcd/server/v3",
    version: "v3.6.6",
    build: GoBuild::InModule {
        module: "go.etcd.io/etcd/server/v3",
        staging_version: None,
    },
};

/// kwok: kubelets simulated by stages, so pods move through their phases without containers.
pub const KWOK: GoTool = GoTool {
    name: "kwok",
    package: "sigs.k8s.io/kwok/cmd/kwok",
    version: "v0.8.0",
    build: GoBuild::Install,
};

/// Every tool `cargo xtask ci` builds.
pub const GO_TOOLS: &[GoTool] = &[OIDC_PROVIDER, ETCD, KUBE_APISERVER, KUBE_SCHEDULER, KWOK];

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

    /// The built binary (`go install` names it after the package's last element; a build in
    /// a module is named after the tool).
    pub fn binary(&self) -> PathBuf {
        match self.build {
            GoBuild::Install => {
                let file = self.package.rsplit('/').next().unwrap_or(self.name);
                self.bin_dir().join(file)
            }
            GoBuild::InModule { .. } => self.bin_dir().join(self.name),
        }
    }

    /// The built binary, or a panic saying how to build it.
    pub fn require(&self) -> PathBuf {
        let binary = self.binary();
        assert!(
            binary.exists(),
            "{} is missing at {}: run `cargo xtask ci` (it builds {}@{} with Go)",
            self.name,
            binary.display(),
            self.package,
            self.version
        );
        binary
    }
}

/// A file read from a Go module as published (the module proxy's copy in the module cache), at
/// test time: never committed here.
#[derive(Debug, Clone, Copy)]
pub struct GoModuleFile {
    pub module: &'static str,
    pub version: &'static str,
    pub path: &'static str,
}

/// Knative Serving's own `Service` CRD (`serving.knative.dev/v1`), the peer of the app client.
pub const KNATIVE_SERVICE_CRD: GoModuleFile = GoModuleFile {
    module: "knative.dev/serving",
    version: "v0.51.0",
    path: "config/core/300-resources/service.yaml",
};

/// Every module file `cargo xtask ci` downloads.
pub const GO_MODULE_FILES: &[GoModuleFile] = &[KNATIVE_SERVICE_CRD];

impl GoModuleFile {
    /// Where the module cache holds it (`go env GOMODCACHE`, else `~/go/pkg/mod`).
    pub fn location(&self) -> PathBuf {
        let cache = std::process::Command::new("go")
            .args(["env", "GOMODCACHE"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .map_or_else(
                || {
                    let home = std::env::var_os("HOME")
                        .map_or_else(|| PathBuf::from("/root"), PathBuf::from);
                    home.join("go/pkg/mod")
                },
                PathBuf::from,
            );
        cache
            .join(format!("{}@{}", self.module, self.version))
            .join(self.path)
    }

    /// Its text, or a panic saying how to get it.
    pub fn require(&self) -> String {
        let path = self.location();
        std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} ({e}): run `cargo xtask ci` (it downloads {}@{} with go mod download)",
                path.display(),
                self.module,
                self.version
            )
        })
    }
}
