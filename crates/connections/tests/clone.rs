//! Real git over a real sshd on 127.0.0.1: repositories made by the test, cloned with the
//! connection's key and the server's host key pinned from the secret's known_hosts.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use flyte_connections::{Connection, GitInit, HostKeyPolicy, clone};
use flyte_testkit::{Sshd, TempHome};

fn git(dir: &Path, args: &[&str]) -> String {
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
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A git host: sshd, a bare `origin.git` (main, branch `feature`, tag `v1`, a submodule), the
/// secret's mount directory with the client key (0600) and the host key pinned.
struct GitHost {
    home: TempHome,
    sshd: Sshd,
}

impl GitHost {
    fn new() -> Self {
        let home = TempHome::new();
        let sshd = Sshd::start();
        let host = Self { home, sshd };
        let root = host.home.path();
        // The submodule's repository, served by the same host.
        let sub_work = root.join("sub-work");
        std::fs::create_dir_all(&sub_work).unwrap();
        git(&sub_work, &["init", "-q"]);
        std::fs::write(sub_work.join("lib.txt"), "library\n").unwrap();
        git(&sub_work, &["add", "."]);
        git(&sub_work, &["commit", "-q", "-m", "lib"]);
        git(root, &["clone", "-q", "--bare", "sub-work", "sub.git"]);

        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q"]);
        std::fs::write(work.join("README"), "first\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "first"]);
        git(&work, &["tag", "v1"]);
        git(&work, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(work.join("feature.txt"), "feature\n").unwrap();
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
        std::fs::write(work.join("README"), "second\n").unwrap();
        git(&work, &["add", "."]);
        git(&work, &["commit", "-q", "-m", "second"]);
        git(root, &["clone", "-q", "--bare", "work", "origin.git"]);

        let mount = host.mount();
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::copy(host.sshd.client_key(), mount.join("id_rsa")).unwrap();
        std::fs::set_permissions(mount.join("id_rsa"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(
            mount.join("known_hosts"),
            format!(
                "[127.0.0.1]:{} {}\n",
                host.sshd.port(),
                host.sshd.host_public_key()
            ),
        )
        .unwrap();
        host
    }

    fn url(&self, repo: &str) -> String {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::current())
            .unwrap()
            .unwrap()
            .name;
        format!(
            "ssh://{user}@127.0.0.1:{}{}",
            self.sshd.port(),
            self.home.path().join(repo).display()
        )
    }

    fn mount(&self) -> PathBuf {
        self.home.path().join("etc/.ssh")
    }

    fn connection(&self) -> Connection {
        serde_json::from_value(serde_json::json!({
            "name": "ssh-git-connection",
            "kind": "ssh",
            "schema": { "url": self.url("origin.git") },
            "secret": { "name": "ssh-key-secret", "mountPath": self.mount(), "defaultMode": 384 },
        }))
        .unwrap()
    }

    fn pinned(&self) -> HostKeyPolicy {
        HostKeyPolicy::Pinned {
            known_hosts: self.mount().join("known_hosts"),
        }
    }

    fn dest(&self, name: &str) -> PathBuf {
        self.home.path().join("checkouts").join(name)
    }

    fn head_of(&self, rev: &str) -> String {
        git(
            &self.home.path().join("origin.git"),
            &["rev-parse", &format!("{rev}^{{commit}}")],
        )
    }
}

fn init(revision: Option<&str>, flags: &[&str]) -> GitInit {
    GitInit {
        url: None,
        revision: revision.map(str::to_owned),
        flags: flags.iter().map(|f| (*f).to_owned()).collect(),
    }
}

#[test]
fn clones_at_each_kind_of_revision_with_the_host_key_pinned() {
    let host = GitHost::new();
    let connection = host.connection();
    for (case, init, want_rev, want_file) in [
        ("default branch", init(None, &[]), "main", "README"),
        (
            "branch",
            init(Some("feature"), &[]),
            "feature",
            "feature.txt",
        ),
        ("tag", init(Some("v1"), &[]), "v1", "README"),
        ("shallow", init(None, &["--depth 1"]), "main", "README"),
        (
            "fetch a branch",
            init(Some("feature"), &["--experimental-fetch", "--depth 1"]),
            "feature",
            "feature.txt",
        ),
        (
            "submodules",
            init(None, &["--recurse-submodules"]),
            "main",
            "sub/lib.txt",
        ),
    ] {
        let dest = host.dest(case);
        let cloned = clone(&connection, &dest, &init, &host.pinned())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(cloned.commit, host.head_of(want_rev), "{case}");
        assert_eq!(git(&dest, &["rev-parse", "HEAD"]), cloned.commit, "{case}");
        assert!(dest.join(want_file).is_file(), "{case}: {want_file}");
        // The remote is the connection's URL again.
        assert_eq!(
            git(&dest, &["remote", "get-url", "origin"]),
            host.url("origin.git"),
            "{case}"
        );
    }
    assert_eq!(
        git(&host.dest("shallow"), &["rev-list", "--count", "HEAD"]),
        "1"
    );
    // The commit itself, by hash, with a fetch.
    let first = host.head_of("v1");
    let cloned = clone(
        &connection,
        &host.dest("by-hash"),
        &init(Some(&first), &["--experimental-fetch"]),
        &host.pinned(),
    )
    .unwrap();
    assert_eq!(cloned.commit, first);
}

#[test]
fn refusals_name_the_problem_and_touch_nothing() {
    let host = GitHost::new();
    let connection = host.connection();
    let check = |dest: &Path, init: &GitInit, policy: &HostKeyPolicy, want: &str| {
        let err = clone(&connection, dest, init, policy)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    };

    // A destination with something in it is left alone.
    let busy = host.dest("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("mine.txt"), "keep me").unwrap();
    check(
        &busy,
        &init(None, &[]),
        &host.pinned(),
        "already exists and is not empty",
    );
    check(
        &busy,
        &init(None, &["--experimental-fetch"]),
        &host.pinned(),
        "already exists and is not empty",
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    check(
        &host.dest("rev"),
        &init(Some("no-such-branch"), &[]),
        &host.pinned(),
        "`git -C",
    );

    // The host presents a key other than the pinned one.
    let other = host.home.path().join("other_known_hosts");
    std::fs::write(&other, format!("[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh2c3d5b3VsZGxpa2V0b2tub3d3aGF0dGhpc2lzZm9y\n", host.sshd.port())).unwrap();
    check(
        &host.dest("mitm"),
        &init(None, &[]),
        &HostKeyPolicy::Pinned { known_hosts: other },
        "Host key verification failed",
    );
    // No known_hosts at all: say how to get one, unless learning is asked for.
    let missing = host.home.path().join("none/known_hosts");
    check(
        &host.dest("nokh"),
        &init(None, &[]),
        &HostKeyPolicy::Pinned {
            known_hosts: missing.clone(),
        },
        "ssh-keyscan",
    );
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    let learned = clone(
        &connection,
        &host.dest("learn"),
        &init(None, &[]),
        &HostKeyPolicy::LearnFirst {
            known_hosts: missing.clone(),
        },
    )
    .unwrap();
    assert_eq!(learned.commit, host.head_of("main"));
    assert!(
        std::fs::read_to_string(&missing).unwrap().contains(
            host.sshd
                .host_public_key()
                .split_whitespace()
                .nth(1)
                .unwrap()
        )
    );

    // A key others can read.
    std::fs::set_permissions(
        host.mount().join("id_rsa"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    check(
        &host.dest("mode"),
        &init(None, &[]),
        &host.pinned(),
        "has mode 644",
    );
    std::fs::set_permissions(
        host.mount().join("id_rsa"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();

    // No URL anywhere.
    let mut no_url = connection.clone();
    no_url.schema = None;
    let err = clone(
        &no_url,
        &host.dest("nourl"),
        &init(None, &[]),
        &host.pinned(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("has no schema.url"), "{err}");
}
