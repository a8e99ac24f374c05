//! `cargo xtask tidy`: the layering rules of ARCHITECTURE.md, checked against the manifests
//! (`cargo metadata`), so breaking one fails CI instead of waiting for a reviewer:
//!
//! - only the binary (`flyte-run`) depends on the script engine or the command-line parser;
//! - the pure cores depend only on crates that do no I/O (an allow-list: a new dependency there
//!   is a decision, made by editing [`PURE_ALLOWED`]);
//! - the client library builds no SSH server: flyte-debug-client's dependency tree (its own
//!   features only, as another tool would build it) has none of [`SERVER_ONLY`];
//! - the pure cores' own sources name no I/O, clock or environment API of std
//!   ([`PURE_FORBIDDEN`]). This stands in for building them for `wasm32-unknown-unknown`
//!   (where those APIs fail or are missing), a target the toolchain here cannot download;
//! - every published library crate has an example in `examples/examples/`, and each example
//!   uses one of the workspace's crates only, as an outside tool importing that crate would.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context as _, bail};

/// Crates only the binary may depend on.
const BINARY_ONLY: &[&str] = &["rhai", "clap"];
const BINARY: &str = "flyte-run";
/// Crates whose code is a state machine or a format: no I/O, no clock.
const PURE: &[&str] = &["flyte-reconciler-core", "flyte-kservice-naming"];
/// What the pure cores may depend on.
const PURE_ALLOWED: &[&str] = &["thiserror", "serde", "serde_json", "sha2", "hex"];

/// Crates only the debug server needs, which a client importing flyte-debug-client must not
/// build.
const SERVER_ONLY: &[&str] = &["russh", "russh-sftp", "pty-process"];
const CLIENT: &str = "flyte-debug-client";

/// The crates `package` builds on its own (normal dependencies, its default features).
fn dependency_tree(package: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "tree", "--locked", "-e", "normal", "--prefix", "none", "-p", package,
        ])
        .output()
        .context("cannot run cargo tree")?;
    if !output.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// The pure modules of crates that also have an I/O layer (ARCHITECTURE.md names them).
const PURE_FILES: &[&str] = &[
    "crates/ssh-config/src/model.rs",
    "crates/ssh-config/src/quote.rs",
    "crates/ssh-config/src/block.rs",
    "crates/ssh-config/src/managed.rs",
    "crates/ssh-config/src/audit.rs",
    "crates/debug-client/src/names.rs",
    "crates/runner-proxy/src/remote.rs",
    "crates/connections/src/plan.rs",
    "crates/operator/src/app.rs",
    "crates/operator/src/crd.rs",
    "crates/operator/src/pod.rs",
];

/// What a pure core's source (outside its tests) must not name: files, sockets, processes, the
/// environment, threads and the clocks.
const PURE_FORBIDDEN: &[&str] = &[
    "std::fs",
    "std::net",
    "std::process",
    "std::env",
    "std::thread",
    "std::io::stdin",
    "std::io::stdout",
    "SystemTime::now",
    "Instant::now",
    "Timestamp::now",
    "println!",
    "eprintln!",
];

/// Where a pure core's source names a forbidden API: `file:line: what`, skipping `#[cfg(test)]`
/// modules (from the attribute to the end of the file, where this workspace keeps them).
fn forbidden_uses(file: &str, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = line.split("//").next().unwrap_or_default();
        for api in PURE_FORBIDDEN {
            if code.contains(api) {
                found.push(format!(
                    "{file}:{}: a pure core names {api}; take the value as an argument (time, input) or move the I/O to its driver",
                    number + 1
                ));
            }
        }
    }
    found
}

/// Workspace packages that are not library crates of their own (the binary, test support,
/// tooling and the examples themselves).
const NOT_LIBRARIES: &[&str] = &[
    BINARY,
    "flyte-testkit",
    "flyte-tests",
    "xtask",
    "flyte-examples",
];

/// The workspace crates an example's code names (`flyte_x::...` paths), as package names.
fn crates_used(text: &str) -> std::collections::BTreeSet<String> {
    let mut used = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("flyte_") {
            let before = rest[..at].chars().next_back();
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if tail[len..].starts_with("::")
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            {
                used.insert(tail[..len].replace('_', "-"));
            }
            rest = &tail[len..];
        }
    }
    used
}

/// Examples that use more than one workspace crate, and libraries without an example.
fn example_violations(examples: &[(String, String)], libraries: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    let mut covered = std::collections::BTreeSet::new();
    for (name, text) in examples {
        let used = crates_used(text);
        if used.len() > 1 {
            found.push(format!(
                "examples/examples/{name} uses {}: an example uses one workspace crate, as another tool importing it would",
                used.into_iter().collect::<Vec<_>>().join(", ")
            ));
        } else {
            covered.extend(used);
        }
    }
    for library in libraries {
        if !covered.contains(*library) {
            found.push(format!(
                "{library} has no example: add examples/examples/<name>.rs using it alone"
            ));
        }
    }
    found
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &std::path::Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Each workspace package's normal (not dev, not build) dependencies, from `cargo metadata`.
type Manifests = BTreeMap<String, Vec<String>>;

fn manifests(metadata: &serde_json::Value) -> anyhow::Result<Manifests> {
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    let mut out = Manifests::new();
    for package in packages {
        let name = package["name"]
            .as_str()
            .context("a package without a name")?;
        let deps = package["dependencies"]
            .as_array()
            .context("a package without dependencies")?
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str().map(str::to_owned))
            .collect();
        out.insert(name.to_owned(), deps);
    }
    Ok(out)
}

/// Every broken rule, as a sentence naming the crate, the dependency and the rule.
fn violations(manifests: &Manifests) -> Vec<String> {
    let mut found = Vec::new();
    for (package, deps) in manifests {
        for dep in deps {
            if BINARY_ONLY.contains(&dep.as_str()) && package != BINARY {
                found.push(format!(
                    "{package} depends on {dep}: only {BINARY} (the adapters) may; move the code that needs it there"
                ));
            }
            if PURE.contains(&package.as_str()) && !PURE_ALLOWED.contains(&dep.as_str()) {
                found.push(format!(
                    "{package} is a pure core but depends on {dep}: keep I/O in its driver, or add {dep} to PURE_ALLOWED in xtask/src/tidy.rs if it does none"
                ));
            }
        }
    }
    found
}

pub(crate) fn run() -> anyhow::Result<()> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("cargo metadata wrote no JSON")?;
    let manifests = manifests(&metadata)?;
    for rule in PURE {
        if !manifests.contains_key(*rule) {
            bail!("tidy: the pure core {rule} is not in the workspace; update xtask/src/tidy.rs");
        }
    }
    let mut found = violations(&manifests);
    for dep in dependency_tree(CLIENT)? {
        if SERVER_ONLY.contains(&dep.as_str()) {
            found.push(format!(
                "{CLIENT} builds {dep}: it must use flyte-debug-server without its `server` feature (the workspace dependency has default-features = false)"
            ));
        }
    }
    let root = crate::ci::workspace_root()?;
    let mut pure_files = PURE_FILES.iter().map(|f| root.join(f)).collect::<Vec<_>>();
    for package in PURE {
        let dir = package.trim_start_matches("flyte-");
        pure_files.extend(rust_files(&root.join("crates").join(dir).join("src"))?);
    }
    for file in pure_files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let name = file.strip_prefix(&root).unwrap_or(&file).display();
        found.extend(forbidden_uses(&name.to_string(), &text));
    }
    let mut examples = Vec::new();
    for file in rust_files(&root.join("examples/examples"))? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        examples.push((name, text));
    }
    let libraries: Vec<&str> = manifests
        .keys()
        .map(String::as_str)
        .filter(|p| !NOT_LIBRARIES.contains(p))
        .collect();
    found.extend(example_violations(&examples, &libraries));
    if !found.is_empty() {
        bail!(
            "tidy: {} rule(s) broken:\n  {}",
            found.len(),
            found.join("\n  ")
        );
    }
    println!(
        "tidy: {} packages follow the layering rules; the pure cores' sources name no I/O; {} examples cover the {} library crates, one crate each",
        manifests.len(),
        examples.len(),
        libraries.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_use_one_crate_each_and_cover_every_library() {
        let example = |name: &str, text: &str| (name.to_owned(), text.to_owned());
        for (examples, want) in [
            (vec![example("a.rs", "use flyte_fs::replace;\n")], vec![]),
            (
                vec![example(
                    "a.rs",
                    "// flyte_keys::x in a comment\nfn main() { flyte_fs::replace(); }\n",
                )],
                vec![],
            ),
            (
                // A usage string or a function named flyte_org is not a crate.
                vec![example(
                    "a.rs",
                    "let u = \"usage: flyte_org\"; my_flyte_fs::x(); flyte_fs::y();\n",
                )],
                vec![],
            ),
            (
                vec![example(
                    "a.rs",
                    "use flyte_fs::replace;\nuse flyte_keys::Key;\n",
                )],
                vec![
                    "examples/examples/a.rs uses flyte-fs, flyte-keys",
                    "flyte-fs has no example",
                    "flyte-keys has no example",
                ],
            ),
            (
                vec![],
                vec!["flyte-fs has no example", "flyte-keys has no example"],
            ),
        ] {
            let mut with_keys = examples.clone();
            if !examples.is_empty() && want.is_empty() {
                with_keys.push(example("b.rs", "use flyte_keys::Key;\n"));
            }
            let found = example_violations(&with_keys, &["flyte-fs", "flyte-keys"]);
            assert_eq!(found.len(), want.len(), "{examples:?}: {found:?}");
            for (got, want) in found.iter().zip(want) {
                assert!(got.starts_with(want), "{got}");
            }
        }
    }

    #[test]
    fn pure_sources_that_reach_for_io_or_the_clock_are_named() {
        for (text, want) in [
            ("fn f() -> u8 { 1 }\n", vec![]),
            ("use std::fs;\n", vec!["a.rs:1: a pure core names std::fs"]),
            (
                "fn f() {\n    let t = std::time::Instant::now();\n}\n",
                vec!["a.rs:2: a pure core names Instant::now"],
            ),
            ("// reads no std::env\nfn f() {}\n", vec![]),
            (
                "fn f() {}\n#[cfg(test)]\nmod tests { use std::fs; }\n",
                vec![],
            ),
        ] {
            let found = forbidden_uses("a.rs", text);
            assert_eq!(found.len(), want.len(), "{text:?}: {found:?}");
            for (got, want) in found.iter().zip(want) {
                assert!(got.starts_with(want), "{got}");
            }
        }
    }

    #[test]
    fn manifests_break_the_rules_they_should() {
        let metadata = serde_json::json!({"packages": [
            {"name": "flyte-run", "dependencies": [
                {"name": "rhai", "kind": null}, {"name": "clap", "kind": null}]},
            {"name": "flyte-auth", "dependencies": [
                {"name": "clap", "kind": null}, {"name": "rhai", "kind": "dev"}]},
            {"name": "flyte-reconciler-core", "dependencies": [
                {"name": "thiserror", "kind": null}, {"name": "tokio", "kind": null},
                {"name": "proptest", "kind": "dev"}]},
            {"name": "flyte-kservice-naming", "dependencies": [
                {"name": "sha2", "kind": null}]},
        ]});
        let found = violations(&manifests(&metadata).unwrap());
        // (the crate and dependency each sentence must name)
        let expected = [("flyte-auth", "clap"), ("flyte-reconciler-core", "tokio")];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for ((package, dep), sentence) in expected.iter().zip(&found) {
            assert!(
                sentence.starts_with(&format!("{package} ")) && sentence.contains(dep),
                "{sentence}"
            );
        }
    }
}
