//! Real git over a real sshd on 127.0.0.1: repositories made by the test, cloned with the
//! connection's key and the server's host key pinned from the secret's known_hosts.
#![allow(clippy::disallowed_methods)] // Tests write fixtures and start processes directly.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use flyte_connections::{Connection, GitInit, HostKeyPolicy, clone};
use flyte_testkit::{GitHost, git};

fn pinned(host: &GitHost) -> HostKeyPolicy {
    HostKeyPolicy::Pinned {
        known_hosts: host.mount().join("known_hosts"),
    }
}

fn connection(host: &GitHost) -> Connection {
    serde_json::from_value(host.connection_json()).unwrap()
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
    let connection = connection(&host);
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
            "shallow at a branch",
            init(Some("feature"), &["--depth=1"]),
            "feature",
            "feature.txt",
        ),
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
        let cloned = clone(&connection, &dest, &init, &pinned(&host))
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
        &pinned(&host),
    )
    .unwrap();
    assert_eq!(cloned.commit, first);
}

#[test]
fn refusals_name_the_problem_and_touch_nothing() {
    let host = GitHost::new();
    let connection = connection(&host);
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
        &pinned(&host),
        "already exists and is not empty",
    );
    check(
        &busy,
        &init(None, &["--experimental-fetch"]),
        &pinned(&host),
        "already exists and is not empty",
    );
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);

    check(
        &host.dest("rev"),
        &init(Some("no-such-branch"), &[]),
        &pinned(&host),
        "`git -C",
    );

    // The host presents a key other than the pinned one.
    let other = host.path().join("other_known_hosts");
    std::fs::write(&other, format!("[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh2c3d5b3VsZGxpa2V0b2tub3d3aGF0dGhpc2lzZm9y\n", host.sshd().port())).unwrap();
    check(
        &host.dest("mitm"),
        &init(None, &[]),
        &HostKeyPolicy::Pinned { known_hosts: other },
        "Host key verification failed",
    );
    // No known_hosts at all: say how to get one, unless learning is asked for.
    let missing = host.path().join("none/known_hosts");
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
            host.sshd()
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
        &pinned(&host),
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
        &pinned(&host),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("has no schema.url"), "{err}");
}

#[test]
fn failed_clones_leave_nothing_and_learning_needs_a_writable_file() {
    let host = GitHost::new();
    let connection = connection(&host);
    let check = |dest: &Path, init: &GitInit, policy: &HostKeyPolicy, want: &str| {
        let err = clone(&connection, dest, init, policy)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{want}: {err}");
    };
    // A revision named like a file is not a revision: an error, and the failed clone is gone.
    check(
        &host.dest("file-rev"),
        &init(Some("README"), &[]),
        &pinned(&host),
        "checkout -q README --",
    );
    assert!(
        !host.dest("file-rev").exists(),
        "a failed clone leaves nothing behind"
    );
    // Into an existing empty directory: emptied again after a failure, not removed.
    let empty = host.dest("empty");
    std::fs::create_dir_all(&empty).unwrap();
    check(
        &empty,
        &init(Some("no-such"), &["--experimental-fetch"]),
        &pinned(&host),
        "fetch",
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);

    // Learning a key needs somewhere to keep it: a read-only place is refused up front.
    let frozen = host.path().join("frozen");
    std::fs::create_dir_all(&frozen).unwrap();
    let _guard = flyte_testkit::ReadOnlyDir::new(&frozen);
    check(
        &host.dest("frozen"),
        &init(None, &[]),
        &HostKeyPolicy::LearnFirst {
            known_hosts: frozen.join("known_hosts"),
        },
        "cannot record the git host's key there",
    );
}
