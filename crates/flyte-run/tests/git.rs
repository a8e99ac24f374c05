//! `git::clone` and playbooks/git.rhai through real git over a real sshd (testkit's `GitHost`).

#![allow(clippy::unwrap_used)]

use flyte_testkit::{GitHost, TempHome, git};

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

fn playbook(home: &TempHome, args: &[&str]) -> std::process::Output {
    home.command(BIN)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("POLYAXON_SSH_PRIVATE_KEY")
        .arg("playbooks/git.rhai")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_git_playbook_clones_with_the_connection_key_and_pinned_host() {
    let host = GitHost::new();
    let home = TempHome::new();
    let dest = host.dest("src");
    let set = |k: &str, v: &str| format!("{k}={v}");
    let url = set("url", &host.url("origin.git"));
    let mount = set("mount", &host.mount().display().to_string());
    let dest_arg = set("dest", &dest.display().to_string());
    let out = playbook(
        &home,
        &[
            "--set",
            &url,
            "--set",
            &mount,
            "--set",
            &dest_arg,
            "--set",
            "revision=feature",
            "--set",
            "flags=--depth 1",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "cloned {}\ncommit {}\n",
            dest.display(),
            host.head_of("feature")
        )
    );
    assert!(dest.join("feature.txt").is_file());

    // A dry run prints the git commands and clones nothing.
    let dry_dest = host.dest("dry");
    let dry_arg = set("dest", &dry_dest.display().to_string());
    let out = playbook(
        &home,
        &[
            "--dry-run",
            "--set",
            &url,
            "--set",
            &mount,
            "--set",
            &dry_arg,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with("dry-run: git clone -q -- ssh://"),
        "{text}"
    );
    assert!(!dry_dest.exists());

    // The same destination again: refused, the first clone untouched.
    let out = playbook(&home, &["--set", &url, "--set", &mount, "--set", &dest_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists and is not empty"));
    assert_eq!(git(&dest, &["rev-parse", "HEAD"]), host.head_of("feature"));

    // A mount without known_hosts: the fix is named; learn_host_key opts in to first use.
    std::fs::remove_file(host.mount().join("known_hosts")).unwrap();
    let fresh = set("dest", &host.dest("fresh").display().to_string());
    let out = playbook(&home, &["--set", &url, "--set", &mount, "--set", &fresh]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ssh-keyscan"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = playbook(
        &home,
        &[
            "--set",
            &url,
            "--set",
            &mount,
            "--set",
            &fresh,
            "--set",
            "learn_host_key=true",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    misspelled_connection_fields_are_named(&home);
}

/// A connection map with a misspelled field names it.
fn misspelled_connection_fields_are_named(home: &TempHome) {
    let out = home
        .command(BIN)
        .args(["-e", r#"git::clone(#{ name: "c", kind: "ssh", secret: #{ name: "s", mountpath: "/x" } }, "/tmp/x")"#])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("git::clone: the connection map") && stderr.contains("mountpath"),
        "{stderr}"
    );
}
