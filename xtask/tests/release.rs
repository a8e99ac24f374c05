//! `cargo xtask release` and `dist` for real, in a temporary clone of this repository, offline.
//! The one step not exercised is compiling the release binary (minutes); a small executable
//! that answers `completions SHELL` stands in for it (`--binary`).
// Tests start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

fn run(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "release test")
        .env("GIT_AUTHOR_EMAIL", "release@test.invalid")
        .env("GIT_COMMITTER_NAME", "release test")
        .env("GIT_COMMITTER_EMAIL", "release@test.invalid")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, "git", args);
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `cargo xtask release/dist ARGS` in the clone; its output, and whether it succeeded.
fn xtask(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = run(dir, XTASK, args);
    (out.status.success(), text(&out))
}

#[test]
fn a_clean_clone_becomes_a_tagged_release_with_a_verified_reproducible_archive() {
    let scratch = tempfile::tempdir().unwrap();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let clone = scratch.path().join("clone");
    git(
        scratch.path(),
        &[
            "clone",
            "-q",
            workspace.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let stub = scratch.path().join("flyte-run");
    std::fs::write(&stub, "#!/bin/sh\necho \"# flyte-run $1 for $2\"\n").unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let stub = stub.to_str().unwrap();
    let ok_checks = ["--check-command", "true", "--binary", stub];

    refusals(&clone, stub);
    dry_run(&clone, &ok_checks);
    release(&clone, &ok_checks);
    archive(&clone, stub);

    // The same version again is refused.
    let mut args = vec!["release", "0.2.0"];
    args.extend(ok_checks);
    let (ok, said) = xtask(&clone, &args);
    assert!(!ok && said.contains("is not newer than 0.2.0"), "{said}");
}

/// A dirty tree, an older or malformed version, a failing check: refused, nothing changed.
fn refusals(clone: &Path, stub: &str) {
    std::fs::write(clone.join("stray.txt"), "x").unwrap();
    let (ok, said) = xtask(
        clone,
        &[
            "release",
            "9.0.0",
            "--check-command",
            "true",
            "--binary",
            stub,
        ],
    );
    assert!(!ok && said.contains("uncommitted changes"), "{said}");
    std::fs::remove_file(clone.join("stray.txt")).unwrap();
    for (version, checks, want) in [
        ("0.0.9", "true", "is not newer than 0.1.0"),
        ("nine", "true", "is not a version"),
        ("0.2.0", "false", "the checks failed"),
    ] {
        let (ok, said) = xtask(
            clone,
            &[
                "release",
                version,
                "--check-command",
                checks,
                "--binary",
                stub,
            ],
        );
        assert!(
            !ok && said.contains(want),
            "{version}/{checks}: {want:?} in {said}"
        );
        assert_eq!(git(clone, &["status", "--porcelain"]), "", "{version}");
        assert!(git(clone, &["tag", "--list"]).is_empty(), "{version}");
    }
}

/// A dry run says what it would do and does none of it.
fn dry_run(clone: &Path, ok_checks: &[&str]) {
    let mut args = vec!["release", "0.2.0", "--dry-run"];
    args.extend(ok_checks);
    let (ok, said) = xtask(clone, &args);
    assert!(ok, "{said}");
    assert!(
        said.contains("would add to CHANGELOG.md") && said.contains("## v0.2.0"),
        "{said}"
    );
    assert!(said.contains("would commit \"Release v0.2.0\""), "{said}");
    assert_eq!(git(clone, &["status", "--porcelain"]), "");
    assert!(git(clone, &["tag", "--list", "v0.2.0"]).is_empty());
}

/// The release: every step timed, a commit, the version everywhere, the changelog, an
/// annotated tag carrying the section.
fn release(clone: &Path, ok_checks: &[&str]) {
    let mut args = vec!["release", "0.2.0"];
    args.extend(ok_checks);
    let (ok, said) = xtask(clone, &args);
    assert!(ok, "{said}");
    for step in [
        "==> run the checks",
        "==> set the version",
        "==> write the archive",
        "==> tag v0.2.0",
        "done in",
    ] {
        assert!(said.contains(step), "{step:?} in {said}");
    }
    assert_eq!(git(clone, &["status", "--porcelain"]), "");
    assert_eq!(
        git(clone, &["cat-file", "-t", "v0.2.0"]),
        "tag",
        "an annotated tag"
    );
    assert!(
        git(clone, &["tag", "-l", "--format=%(contents)", "v0.2.0"]).contains("## v0.2.0"),
        "the tag carries the changelog section"
    );
    assert_eq!(git(clone, &["log", "-1", "--format=%s"]), "Release v0.2.0");
    let metadata = run(
        clone,
        "cargo",
        &[
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ],
    );
    assert!(metadata.status.success(), "{}", text(&metadata));
    let metadata: serde_json::Value = serde_json::from_slice(&metadata.stdout).unwrap();
    for package in metadata["packages"].as_array().unwrap() {
        assert_eq!(package["version"], "0.2.0", "{}", package["name"]);
        for dep in package["dependencies"].as_array().unwrap() {
            // flyte-testkit is a path-only dev-dependency (unpublished): no version to bump.
            if dep["name"].as_str().unwrap().starts_with("flyte-") && dep["name"] != "flyte-testkit"
            {
                assert_eq!(
                    dep["req"], "^0.2.0",
                    "{} -> {}",
                    package["name"], dep["name"]
                );
            }
        }
    }
    let changelog = std::fs::read_to_string(clone.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.starts_with("# Changelog\n\n## v0.2.0 ("),
        "{changelog}"
    );
    assert!(
        changelog.contains("\n### crates/"),
        "grouped by area: {changelog}"
    );
}

/// The archive: checksums verify, the expected files, owner 0; `dist` again gives the same
/// bytes.
fn archive(clone: &Path, stub: &str) {
    let dist = clone.join("target/dist");
    let sums = run(&dist, "sha256sum", &["-c", "SHA256SUMS"]);
    assert!(sums.status.success(), "{}", text(&sums));
    let archive = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "gz"))
        .unwrap();
    let name = archive.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("flyte-run-0.2.0-") && name.ends_with(".tar.gz"),
        "{name}"
    );
    let top = name.trim_end_matches(".tar.gz");
    let listing = run(&dist, "tar", &["tzvf", &name]);
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for file in [
        "flyte-run",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "man/flyte-run.1",
        "completions/flyte-run.bash",
        "completions/_flyte-run",
        "completions/flyte-run.fish",
    ] {
        assert!(
            listing.contains(&format!("{top}/{file}\n")),
            "{file} in {listing}"
        );
    }
    assert!(
        listing.contains("-rwxr-xr-x 0/0"),
        "owner 0, executable binary: {listing}"
    );
    let first = std::fs::read(&archive).unwrap();
    let (ok, said) = xtask(clone, &["dist", "--binary", stub]);
    assert!(ok, "{said}");
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        first,
        "dist is reproducible"
    );
}
