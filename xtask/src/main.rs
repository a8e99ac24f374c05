//! `cargo xtask <task>`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `ci`: install what the tests need (when root), then fmt, clippy and the tests, timing each
//!   step. This is the README's test command and all that `.ci/run` calls.
//! - `tools`: only the first steps of `ci`: what the tests need, installed and built.
//! - `tidy`: the layering rules checked against the manifests (run by `ci`).
//! - `codegen [--check]`: the generated files the repository commits (flyteidl2 descriptors);
//!   `--check`, run by `ci`, fails when one is stale.
//! - `release VERSION [--dry-run]`, `dist`: see [`release`].
//! - `bench [reconciler|tunnel|sandbox|cli]`: performance figures, measured side by side with a reference
//!   in the same run (never asserted in tests).
#![allow(clippy::print_stdout)]
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]

mod bench;
mod ci;
mod codegen;
mod release;
mod tidy;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  ci                         install test prerequisites (as root), then cargo fmt --check,
                             clippy -D warnings, and the tests
  tools                      install and build only what the tests need (Debian packages as
                             root, Python venvs, the Go tools in ~/.cache/flyte-run-tools)
  tidy                       the layering rules: only flyte-run uses rhai or clap; the pure
                             cores depend on nothing that does I/O
  codegen [--check]          write the generated files (the flyteidl2 descriptors from the
                             pinned PyPI release); --check fails when one is stale
  bench [reconciler|tunnel|sandbox|cli|operator|runner]
                             decisions per second of the reconciler core; the SSH tunnel
                             against direct OpenSSH (download, upload, connect, start-up);
                             a debug run's launch to its route answering; 1,000
                             TaskActions on a real API server beside 1,000 sandbox runs
  release VERSION [--dry-run] [--check-command CMD] [--binary FILE]
                             from a clean tree: run the checks (default `cargo xtask ci`),
                             set VERSION everywhere, add the CHANGELOG.md section, commit,
                             build, write the archive and SHA256SUMS, tag vVERSION
  dist [--binary FILE]       the release archive and SHA256SUMS alone, in target/dist
  publish-order              the library crates in the order cargo publish takes them";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(),
        Some("bench") => bench::run(&args[1..]),
        Some("codegen") => codegen::run(&args[1..]),
        Some("tidy") => tidy::run(),
        Some("tools") => ci::tools(),
        Some("release") => release::release(&args[1..]),
        Some("dist") => release::dist(&args[1..]),
        Some("publish-order") => release::print_publish_order(),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown task {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
