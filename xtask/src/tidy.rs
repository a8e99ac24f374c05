//! `cargo xtask tidy`: the layering rules of ARCHITECTURE.md, checked against the manifests
//! (`cargo metadata`), so breaking one fails CI instead of waiting for a reviewer:
//!
//! - only the binary (`flyte-run`) depends on the script engine or the command-line parser;
//! - the pure cores depend only on crates that do no I/O (an allow-list: a new dependency there
//!   is a decision, made by editing [`PURE_ALLOWED`]).

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
    let found = violations(&manifests);
    if !found.is_empty() {
        bail!(
            "tidy: {} rule(s) broken:\n  {}",
            found.len(),
            found.join("\n  ")
        );
    }
    println!(
        "tidy: {} packages follow the layering rules",
        manifests.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
