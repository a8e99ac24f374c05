//! A git host to clone from over ssh: a real sshd on 127.0.0.1 serving bare repositories made
//! here (`origin.git` with main, branch `feature`, tag `v1` and a submodule from `sub.git`), and
//! a connection secret's mount directory holding the client key (0600) and the pinned host key.

use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Sshd, TempHome};

/// Run git in `dir` with a fixed identity and no system config; its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The git host (see the module docs).
#[derive(Debug)]
pub struct GitHost {
    home: TempHome,
    sshd: Sshd,
}

impl GitHost {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        let home = TempHome::new();
        let sshd = Sshd::start();
        let host = Self { home, sshd };
        let root = host.home.path();
        // The submodule's repository, served by the same host.
        let sub_work = root.join("sub-work");
        std::fs::create_dir_all(&sub_work).expect("git host fixture");
        git(&sub_work, &["init", "-q"]);
        std::fs::write(sub_work.join("lib.txt"), "library\n").expect("git host fixture");
        git(&sub_work, &["add", "."]);
        git(&sub_work, &["commit", "-q", "-m", "lib"]);
        git(root, &["clone", "-q", "--bare", "sub-work", "sub.git"]);

        let work = root.join("work");
        std::fs::create_dir_all(&work).expect("git host fixture");
        git(&work, &["init", "-q"]);
        std::fs::write(work.join("README"), "first\n").expect("git host fixture");
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(&work, &["tag", "v1"]);
        git(&work, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(work.join("feature.txt"), "feature\n").expect("git host fixture");
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "feature"]);
        git(&work, &["checkout", "-q", "main"]);
        // Added from the local path (no ssh needed to build the fixture), then pointed at the
        // ssh URL cloners will use.
        let sub_path = root.join("sub.git").display().to_string();
        git(&work, &["submodule", "add", "-q", &sub_path, "sub"]);
        git(
            &work,
            &[
                "config",
                "-f",
                ".gitmodules",
                "submodule.sub.url",
                &host.url("sub.git"),
            ],
        );
        std::fs::write(work.join("README"), "second\n").expect("git host fixture");
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "second"]);
        git(root, &["clone", "-q", "--bare", "work", "origin.git"]);

        let mount = host.mount();
        std::fs::create_dir_all(&mount).expect("git host fixture");
        // The private key is created 0600 at open, never copied wider and chmod-ed after.
        let key = std::fs::read(host.sshd.client_key()).expect("git host fixture");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(mount.join("id_rsa"))
            .and_then(|mut file| std::io::Write::write_all(&mut file, &key))
            .expect("git host fixture");
        std::fs::write(
            mount.join("known_hosts"),
            format!(
                "[127.0.0.1]:{} {}\n",
                host.sshd.port(),
                host.sshd.host_public_key()
            ),
        )
        .expect("git host fixture");
        host
    }

    /// The sshd serving the repositories.
    pub fn sshd(&self) -> &Sshd {
        &self.sshd
    }

    /// The host's own directory.
    pub fn path(&self) -> &Path {
        self.home.path()
    }

    /// `ssh://<user>@127.0.0.1:<port>/<path of repo>`.
    pub fn url(&self, repo: &str) -> String {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::current())
            .expect("git host fixture")
            .expect("git host fixture")
            .name;
        format!(
            "ssh://{user}@127.0.0.1:{}{}",
            self.sshd.port(),
            self.home.path().join(repo).display()
        )
    }

    /// The secret's mount directory (`id_rsa`, `known_hosts`).
    pub fn mount(&self) -> PathBuf {
        self.home.path().join("etc/.ssh")
    }

    /// A connection (Polyaxon's shape, as JSON) to `origin.git` with the mount's secret.
    pub fn connection_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": "ssh-git-connection",
            "kind": "ssh",
            "schema": { "url": self.url("origin.git") },
            "secret": { "name": "ssh-key-secret", "mountPath": self.mount(), "defaultMode": 384 },
        })
    }

    /// A path for a checkout (not created).
    pub fn dest(&self, name: &str) -> PathBuf {
        self.home.path().join("checkouts").join(name)
    }

    /// The commit `rev` names in `origin.git`.
    pub fn head_of(&self, rev: &str) -> String {
        git(
            &self.home.path().join("origin.git"),
            &["rev-parse", &format!("{rev}^{{commit}}")],
        )
    }
}
