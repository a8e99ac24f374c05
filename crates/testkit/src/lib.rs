//! Real parts for tests, started and stopped by the tests themselves.
//!
//! - [`TempHome`]: a throwaway home directory, so nothing a test does touches the real `~/.ssh` or
//!   `~/.flyte`. Pass it to child processes with [`TempHome::command`].
//! - [`reserve_port`]: a loopback port no other test process will be handed while the returned
//!   guard lives (tests run as separate processes under nextest, so an in-process lock is not
//!   enough).
//! - [`Sshd`]: the system OpenSSH server on 127.0.0.1 with a throwaway host key and a matching
//!   client config that pins that key. Stopped by pid when dropped, also when the test panics.
//! - [`ReadOnlyDir`]: make a directory unwritable even for root, and writable again on drop.
//! - [`KubeCluster`]: a real Kubernetes control plane (etcd, kube-apiserver, kube-scheduler
//!   built from their Go modules) with kwok as the kubelet of one node.
//! - [`TlsFront`] and [`HttpProxy`]: a TLS-terminating ingress with its own CA, and a real HTTP
//!   proxy (tinyproxy), for what stands in front of a deployment.
//! - [`control_plane::ControlPlane`]: a stand-in for the auth parts of a Flyte deployment that is
//!   not our sandbox (generated Connect servers, another token header).
//!
//! This crate panics instead of returning errors: it is only used by tests, and a panic with a
//! clear message is the most useful failure there.
#![allow(clippy::missing_panics_doc)]
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]

pub mod control_plane;
mod cut_proxy;
mod fronts;
mod git_host;
mod go_tools;
mod kube;
mod ports;
mod readonly;
mod runner_lab;
mod sshd;
mod venv;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use cut_proxy::CutProxy;
pub use fronts::{HttpProxy, TlsFront};
pub use git_host::{GitHost, git};
pub use go_tools::{
    ETCD, GO_MODULE_FILES, GO_TOOLS, GoBuild, GoModuleFile, GoTool, KNATIVE_SERVICE_CRD,
    KUBE_APISERVER, KUBE_SCHEDULER, KWOK, OIDC_PROVIDER, tools_dir,
};
pub use kube::{IMAGE_FAILS, IMAGE_NEVER_STARTS, IMAGE_SUCCEEDS, KubeCluster};
pub use ports::{PortReservation, reserve_port};
pub use readonly::ReadOnlyDir;
pub use runner_lab::RunnerLab;
pub use sshd::{Sshd, SshdBuilder, ssh_keygen};
pub use venv::{headless_browser, idl_python, interop_python, oidc_browser};

/// A temporary home directory, removed on drop.
#[derive(Debug)]
pub struct TempHome {
    dir: tempfile::TempDir,
}

impl TempHome {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("flyte-home-")
            .tempdir()
            .expect("a temporary directory can be created under $TMPDIR");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `~/.ssh` of this home (not created).
    pub fn ssh_dir(&self) -> PathBuf {
        self.path().join(".ssh")
    }

    /// `~/.flyte/ssh-debug` of this home (not created).
    pub fn ssh_debug_dir(&self) -> PathBuf {
        self.path().join(".flyte").join("ssh-debug")
    }

    /// A command whose `HOME` is this home.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HOME", self.path());
        cmd
    }
}

impl Default for TempHome {
    fn default() -> Self {
        Self::new()
    }
}

/// The login name of the user running the tests (from the passwd entry, as sshd sees it).
pub fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::current())
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("the current uid has a passwd entry")
}

/// Whether the tests run as root (some checks, such as file modes, do not stop root).
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}
