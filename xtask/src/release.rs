//! `cargo xtask release VERSION [--dry-run]` and `cargo xtask dist`: a clean tree to a tagged
//! release with a reproducible, checksummed archive.
//!
//! Both work on the git checkout the command runs in (`git rev-parse --show-toplevel`), so a
//! test can release a temporary clone with an xtask built elsewhere.
//!
//! The archive `target/dist/flyte-run-<version>-<target>.tar.gz` holds, under one directory:
//! the binary, README.md, LICENSE, CHANGELOG.md, completions for bash, zsh and fish, and the man
//! page. Same inputs, same bytes: entries sorted, mtimes the release commit's time, owner 0,
//! modes 0644/0755, and a gzip header without time or name. `SHA256SUMS` sits beside it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use sha2::Digest as _;

/// What `release` and `dist` were asked.
#[derive(Debug, Default)]
struct Options {
    version: Option<String>,
    dry_run: bool,
    /// The checks a release must pass (a shell command), `cargo xtask ci` by default.
    check_command: Option<String>,
    /// Use this binary instead of building one (tests; a binary built by other means).
    binary: Option<PathBuf>,
}

fn parse(args: &[String], wants_version: bool) -> anyhow::Result<Options> {
    let mut options = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dry-run" => options.dry_run = true,
            "--check-command" => {
                options.check_command = Some(
                    args.next()
                        .context("--check-command needs a command")?
                        .clone(),
                );
            }
            "--binary" => {
                options.binary = Some(PathBuf::from(args.next().context("--binary needs a path")?));
            }
            other if other.starts_with('-') => bail!("unknown option {other:?}"),
            version if wants_version && options.version.is_none() => {
                options.version = Some(version.to_owned());
            }
            other => bail!("unexpected argument {other:?}"),
        }
    }
    Ok(options)
}

/// Runs `what`, printing it with the time it took.
fn step<T>(what: &str, run: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    println!("==> {what}");
    let started = Instant::now();
    let result = run().with_context(|| format!("{what} failed"))?;
    println!("    done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(result)
}

fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    output(Command::new("git").current_dir(root).args(args))
}

/// The checkout the command runs in.
fn checkout() -> anyhow::Result<PathBuf> {
    let top = output(Command::new("git").args(["rev-parse", "--show-toplevel"]))
        .context("run cargo xtask release/dist inside the project's git checkout")?;
    let root = PathBuf::from(top);
    ensure!(
        root.join("xtask/Cargo.toml").exists(),
        "{} is not the flyte-run workspace",
        root.display()
    );
    Ok(root)
}

/// `version = "..."` of `[workspace.package]`.
fn workspace_version(root: &Path) -> anyhow::Result<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let section = manifest
        .split("[workspace.package]")
        .nth(1)
        .context("Cargo.toml has no [workspace.package]")?;
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix("version = \"")?.strip_suffix('"'))
        .map(str::to_owned)
        .context("[workspace.package] has no version")
}

/// The newest release tag (`vX.Y.Z`) reachable from HEAD, if any.
fn last_tag(root: &Path) -> Option<String> {
    git(
        root,
        &["describe", "--tags", "--abbrev=0", "--match", "v[0-9]*"],
    )
    .ok()
}

/// The host's target triple (what the archive is for).
fn host_target() -> anyhow::Result<String> {
    let info = output(Command::new("rustc").arg("-vV"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// `manifest` with the workspace version and every internal dependency's version set to
/// `new` (internal dependencies are the `flyte-*` entries with a `path`).
fn bump_manifest(manifest: &str, old: &str, new: &str) -> String {
    let mut in_package = false;
    manifest
        .lines()
        .map(|line| {
            if line.starts_with('[') {
                in_package = line.trim() == "[workspace.package]";
            }
            let old_field = format!("version = \"{old}\"");
            let new_field = format!("version = \"{new}\"");
            if (in_package && line.trim() == old_field)
                || (line.starts_with("flyte-") && line.contains("path = \"crates/"))
            {
                line.replace(&old_field, &new_field)
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// `lock` with the workspace's own packages (no `source`) at `new`.
fn bump_lock(lock: &str, old: &str, new: &str) -> String {
    lock.split("\n[[package]]\n")
        .map(|block| {
            let ours = block
                .lines()
                .any(|l| l.starts_with("name = \"flyte-") || l == "name = \"xtask\"")
                && !block.lines().any(|l| l.starts_with("source = "));
            if ours {
                block.replace(
                    &format!("\nversion = \"{old}\""),
                    &format!("\nversion = \"{new}\""),
                )
            } else {
                block.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n[[package]]\n")
}

/// The area a path belongs to, for the changelog.
fn area(path: &str) -> String {
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("crates"), Some(name)) if !name.contains('.') => format!("crates/{name}"),
        (Some("xtask" | ".ci"), _) => "automation (xtask, CI)".to_owned(),
        (Some("playbooks" | "scripts"), _) => "playbooks".to_owned(),
        // docs/, the crates' README, and Markdown files at the top.
        (Some("docs" | "crates"), _) => "documentation".to_owned(),
        (Some(file), None)
            if Path::new(file)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("md")) =>
        {
            "documentation".to_owned()
        }
        _ => "other".to_owned(),
    }
}

/// The changelog section for `version`: the commits since `since` (all when none), each under
/// the area most of its files are in, areas in name order, commits oldest first.
fn changelog_section(
    root: &Path,
    version: &str,
    since: Option<&str>,
    date: &str,
) -> anyhow::Result<String> {
    let range = since.map_or_else(|| "HEAD".to_owned(), |tag| format!("{tag}..HEAD"));
    let log = git(root, &["log", "--reverse", "--format=%h%x1f%s", &range])?;
    let mut groups: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for line in log.lines().filter(|l| !l.is_empty()) {
        let Some((hash, subject)) = line.split_once('\u{1f}') else {
            continue;
        };
        let files = git(root, &["show", "--name-only", "--format=", hash])?;
        let mut counts: std::collections::BTreeMap<String, usize> =
            std::collections::BTreeMap::new();
        for file in files.lines().filter(|f| !f.is_empty()) {
            *counts.entry(area(file)).or_default() += 1;
        }
        let top = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map_or_else(|| "other".to_owned(), |(name, _)| name.clone());
        groups
            .entry(top)
            .or_default()
            .push(format!("- {subject} ({hash})"));
    }
    let mut section = format!("## v{version} ({date})\n");
    if groups.is_empty() {
        section.push_str("\nNo changes.\n");
    }
    for (name, entries) in groups {
        let _ = write!(section, "\n### {name}\n\n{}\n", entries.join("\n"));
    }
    Ok(section)
}

/// `CHANGELOG.md` with `section` put first.
fn with_section(changelog: Option<&str>, section: &str) -> String {
    const TITLE: &str = "# Changelog\n";
    let rest = changelog
        .unwrap_or_default()
        .strip_prefix(TITLE)
        .unwrap_or(changelog.unwrap_or_default())
        .trim_start();
    if rest.is_empty() {
        format!("{TITLE}\n{section}")
    } else {
        format!("{TITLE}\n{section}\n{rest}")
    }
}

/// `seconds` since the epoch as `YYYY-MM-DD` (UTC).
fn date(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn head_time(root: &Path) -> anyhow::Result<i64> {
    git(root, &["log", "-1", "--format=%ct"])?
        .parse()
        .context("git log gave no commit time")
}

/// The release binary: built (with `SOURCE_DATE_EPOCH` the commit's time, so `--version`
/// names the commit's date), or the one given.
fn binary(root: &Path, options: &Options, epoch: i64) -> anyhow::Result<PathBuf> {
    if let Some(binary) = &options.binary {
        ensure!(
            binary.is_file(),
            "--binary {} is not a file",
            binary.display()
        );
        return Ok(binary.clone());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["build", "--release", "--locked", "-p", "flyte-run"])
        .status()?;
    ensure!(status.success(), "cannot build flyte-run in release mode");
    Ok(root.join("target/release/flyte-run"))
}

/// One archive entry: its path under the top directory, its bytes, executable or not.
type Entry = (String, Vec<u8>, bool);

/// The archive's files, sorted by path.
fn entries(root: &Path, bin: &Path) -> anyhow::Result<Vec<Entry>> {
    let read = |rel: &str| {
        std::fs::read(root.join(rel)).with_context(|| format!("the archive needs {rel}"))
    };
    let mut files = vec![
        ("flyte-run".to_owned(), std::fs::read(bin)?, true),
        ("README.md".to_owned(), read("README.md")?, false),
        ("LICENSE".to_owned(), read("LICENSE")?, false),
        ("CHANGELOG.md".to_owned(), read("CHANGELOG.md")?, false),
        (
            "man/flyte-run.1".to_owned(),
            read("docs/cli/flyte-run.1")?,
            false,
        ),
    ];
    for (shell, name) in [
        ("bash", "flyte-run.bash"),
        ("zsh", "_flyte-run"),
        ("fish", "flyte-run.fish"),
    ] {
        let out = Command::new(bin).args(["completions", shell]).output()?;
        ensure!(
            out.status.success(),
            "{} completions {shell} failed",
            bin.display()
        );
        files.push((format!("completions/{name}"), out.stdout, false));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// A directory (no content) or a file (bytes, executable) at a path in the archive.
type ArchiveItem<'a> = (String, Option<(&'a [u8], bool)>);

/// The reproducible `.tar.gz` of `files` under `top/`.
fn archive(top: &str, files: &[Entry], mtime: u64) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut dirs: Vec<String> = vec![top.to_owned()];
    for (path, _, _) in files {
        if let Some((dir, _)) = path.rsplit_once('/') {
            let dir = format!("{top}/{dir}");
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    let mut items: Vec<ArchiveItem<'_>> = dirs.into_iter().map(|d| (d, None)).collect();
    items.extend(
        files
            .iter()
            .map(|(p, bytes, exec)| (format!("{top}/{p}"), Some((bytes.as_slice(), *exec)))),
    );
    items.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, content) in items {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        match content {
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.set_cksum();
                tar.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Some((bytes, exec)) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if exec { 0o755 } else { 0o644 });
                header.set_size(bytes.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, &path, bytes)?;
            }
        }
    }
    let gz = tar.into_inner()?;
    Ok(gz.finish()?)
}

/// Write the archive and `SHA256SUMS` into `target/dist`; the archive's path.
fn write_dist(root: &Path, version: &str, bin: &Path, epoch: i64) -> anyhow::Result<PathBuf> {
    let target = host_target()?;
    let top = format!("flyte-run-{version}-{target}");
    let files = entries(root, bin)?;
    let bytes = archive(&top, &files, u64::try_from(epoch).unwrap_or(0))?;
    let dist = root.join("target/dist");
    std::fs::create_dir_all(&dist)?;
    let name = format!("{top}.tar.gz");
    let path = dist.join(&name);
    std::fs::write(&path, &bytes)?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let mut sums = std::fs::File::create(dist.join("SHA256SUMS"))?;
    writeln!(sums, "{digest}  {name}")?;
    println!(
        "    {} ({} bytes, sha256 {digest})",
        path.display(),
        bytes.len()
    );
    Ok(path)
}

/// `cargo xtask dist`: the archive alone, for the current version.
pub(crate) fn dist(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args, false)?;
    let root = checkout()?;
    let version = workspace_version(&root)?;
    let epoch = head_time(&root)?;
    let bin = step("build the release binary", || {
        binary(&root, &options, epoch)
    })?;
    step("write the archive and SHA256SUMS", || {
        write_dist(&root, &version, &bin, epoch)
    })?;
    Ok(())
}

/// The publishable crates in an order `cargo publish` can take them: each after the crates it
/// depends on (normal and build dependencies; dev-dependencies do not travel).
pub(crate) fn publish_order(root: &Path) -> anyhow::Result<Vec<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let metadata = output(Command::new(cargo).current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]))?;
    let metadata: serde_json::Value = serde_json::from_str(&metadata)?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata: packages")?;
    // name -> internal crates it needs first
    let mut needs: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for package in packages {
        // `publish = false` is an empty registry list.
        if package["publish"].as_array().is_some_and(Vec::is_empty) {
            continue;
        }
        let name = package["name"].as_str().unwrap_or_default().to_owned();
        let deps = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["path"].is_string() && d["kind"].as_str() != Some("dev"))
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect();
        needs.insert(name, deps);
    }
    let mut order = Vec::new();
    while order.len() < needs.len() {
        let ready: Vec<String> = needs
            .iter()
            .filter(|(name, deps)| {
                !order.contains(*name)
                    && deps
                        .iter()
                        .all(|d| order.contains(d) || !needs.contains_key(d))
            })
            .map(|(name, _)| name.clone())
            .collect();
        ensure!(
            !ready.is_empty(),
            "the crates depend on each other in a cycle"
        );
        order.extend(ready);
    }
    Ok(order)
}

/// `cargo xtask publish-order`.
pub(crate) fn print_publish_order() -> anyhow::Result<()> {
    for (i, name) in publish_order(&checkout()?)?.iter().enumerate() {
        println!("{:>2}. {name}", i + 1);
    }
    Ok(())
}

/// `a` is newer than `b` (both `X.Y.Z`, optionally with a pre-release after `-`).
fn newer(a: &semver::Version, b: &semver::Version) -> bool {
    a > b
}

/// The workspace version and the last release tag, once the tree is clean and `version` is
/// newer than the last release (or, with none, not older than the workspace's).
fn refuse_unreleasable(
    root: &Path,
    version: &semver::Version,
) -> anyhow::Result<(String, Option<String>)> {
    let dirty = git(root, &["status", "--porcelain"])?;
    ensure!(
        dirty.is_empty(),
        "the working tree has uncommitted changes; commit or stash them first:\n{dirty}"
    );
    let current = workspace_version(root)?;
    let last = last_tag(root);
    let floor = match &last {
        Some(tag) => semver::Version::parse(tag.trim_start_matches('v'))
            .with_context(|| format!("the last tag {tag} is not a version"))?,
        None => semver::Version::parse(&current)?,
    };
    let is_newer = if last.is_some() {
        newer(version, &floor)
    } else {
        *version >= floor
    };
    ensure!(
        is_newer,
        "{version} is not newer than {} ({}); pick a higher version",
        floor,
        last.as_deref()
            .map_or("the workspace version".to_owned(), |t| format!(
                "the last tag {t}"
            ))
    );
    let tag = format!("v{version}");
    ensure!(
        git(
            root,
            &["rev-parse", "-q", "--verify", &format!("refs/tags/{tag}")]
        )
        .is_err(),
        "the tag {tag} exists already"
    );
    Ok((current, last))
}

/// `cargo xtask release VERSION [--dry-run]`.
pub(crate) fn release(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args, true)?;
    let wanted = options
        .version
        .clone()
        .context("usage: cargo xtask release VERSION [--dry-run] [--check-command CMD]")?;
    let version = semver::Version::parse(wanted.trim_start_matches('v'))
        .with_context(|| format!("{wanted:?} is not a version (X.Y.Z)"))?;
    let root = checkout()?;
    let (current, last) = refuse_unreleasable(&root, &version)?;
    let tag = format!("v{version}");
    let mode = if options.dry_run {
        " (dry run: nothing is changed)"
    } else {
        ""
    };
    println!("release {current} -> {version}{mode}");

    let check = options
        .check_command
        .clone()
        .unwrap_or_else(|| "cargo xtask ci".to_owned());
    step(&format!("run the checks: {check}"), || {
        let status = Command::new("sh")
            .current_dir(&root)
            .args(["-c", &check])
            .status()?;
        ensure!(
            status.success(),
            "the checks failed ({status}); nothing was released"
        );
        Ok(())
    })?;

    let today = date(head_time(&root)?);
    let section = changelog_section(&root, &version.to_string(), last.as_deref(), &today)?;
    let manifest = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))?;
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).ok();
    let new_manifest = bump_manifest(&manifest, &current, &version.to_string());
    let new_lock = bump_lock(&lock, &current, &version.to_string());
    let new_changelog = with_section(changelog.as_deref(), &section);
    if options.dry_run {
        let bumped = manifest
            .lines()
            .zip(new_manifest.lines())
            .filter(|(a, b)| a != b)
            .count();
        println!("would set version {version} in Cargo.toml ({bumped} lines) and Cargo.lock");
        println!("would add to CHANGELOG.md:\n\n{section}");
        println!(
            "crates to publish, in this order: {}",
            publish_order(&root)?.join(", ")
        );
        println!(
            "would commit \"Release {tag}\", build the release binary, write target/dist/flyte-run-{version}-{}.tar.gz and SHA256SUMS, and create the annotated tag {tag}",
            host_target()?
        );
        return Ok(());
    }
    step("set the version and write the changelog", || {
        std::fs::write(root.join("Cargo.toml"), &new_manifest)?;
        std::fs::write(root.join("Cargo.lock"), &new_lock)?;
        std::fs::write(root.join("CHANGELOG.md"), &new_changelog)?;
        git(&root, &["add", "Cargo.toml", "Cargo.lock", "CHANGELOG.md"])?;
        git(&root, &["commit", "-q", "-m", &format!("Release {tag}")])?;
        Ok(())
    })?;
    let epoch = head_time(&root)?;
    let bin = step("build the release binary", || {
        binary(&root, &options, epoch)
    })?;
    step("write the archive and SHA256SUMS", || {
        write_dist(&root, &version.to_string(), &bin, epoch)
    })?;
    step(&format!("tag {tag}"), || {
        // Verbatim: the section's `##` headings are not comments to strip.
        git(
            &root,
            &[
                "tag",
                "-a",
                "--cleanup=verbatim",
                &tag,
                "-m",
                &format!("flyte-run {tag}\n\n{section}"),
            ],
        )?;
        Ok(())
    })?;
    println!("released {tag}: push it with `git push origin main {tag}`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_bumped_in_the_workspace_and_internal_dependencies_only() {
        let manifest = "[workspace.package]\nversion = \"0.1.0\"\n\n[workspace.dependencies]\nflyte-fs = { version = \"0.1.0\", path = \"crates/fs\" }\nserde = { version = \"0.1.0\" }\n\n[package]\nversion = \"0.1.0\"\n";
        assert_eq!(
            bump_manifest(manifest, "0.1.0", "0.2.0"),
            "[workspace.package]\nversion = \"0.2.0\"\n\n[workspace.dependencies]\nflyte-fs = { version = \"0.2.0\", path = \"crates/fs\" }\nserde = { version = \"0.1.0\" }\n\n[package]\nversion = \"0.1.0\"\n"
        );
        let lock = "version = 4\n\n[[package]]\nname = \"flyte-fs\"\nversion = \"0.1.0\"\n\n[[package]]\nname = \"flyte-lookalike\"\nversion = \"0.1.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
        assert_eq!(
            bump_lock(lock, "0.1.0", "0.2.0"),
            lock.replacen(
                "name = \"flyte-fs\"\nversion = \"0.1.0\"",
                "name = \"flyte-fs\"\nversion = \"0.2.0\"",
                1
            )
        );
    }

    #[test]
    fn paths_group_into_areas_and_dates_are_civil() {
        for (path, want) in [
            ("crates/tunnel/src/link.rs", "crates/tunnel"),
            ("xtask/src/bench.rs", "automation (xtask, CI)"),
            ("README.md", "documentation"),
            ("docs/cli/cli.md", "documentation"),
            ("Cargo.lock", "other"),
            ("crates/README.md", "documentation"),
        ] {
            assert_eq!(area(path), want, "{path}");
        }
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_796_428_800), "2026-12-05");
        assert_eq!(
            with_section(Some("# Changelog\n\n## v0.1.0\n"), "## v0.2.0\n"),
            "# Changelog\n\n## v0.2.0\n\n## v0.1.0\n"
        );
    }

    #[test]
    fn archives_are_the_same_bytes_for_the_same_inputs() {
        let files = vec![
            ("a.txt".to_owned(), b"a".to_vec(), false),
            ("bin/tool".to_owned(), b"#!/bin/sh\n".to_vec(), true),
        ];
        let one = archive("top", &files, 1_700_000_000).unwrap();
        let two = archive("top", &files, 1_700_000_000).unwrap();
        assert_eq!(one, two);
        assert_ne!(one, archive("top", &files, 1_700_000_001).unwrap());
    }
}
