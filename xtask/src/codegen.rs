//! `cargo xtask codegen [--check]`: the generated files the repository commits.
//!
//! - `crates/idl/descriptors/flyteidl2.binpb` (and `.files`, its file names): the flyteidl2
//!   descriptors of the services flyte-run serves and calls, with every file they import, read
//!   from the `_pb2` modules of the pinned `PyPI` `flyteidl2` release (the official build of
//!   Flyte's protos). `crates/idl/build.rs` generates the Rust types and service traits from it
//!   with connectrpc-build, so no `protoc` is needed to build.
//! - `crates/idl/descriptors/flyterun.binpb` (and `.files`): our own services
//!   (`crates/idl/proto/`), compiled by the protoc that the pinned `PyPI` `grpcio-tools` ships.
//!
//! - `docs/rhai/`: the script surface's editor definitions (`<module>.d.rhai`) and reference page
//!   (`reference.md`), written by the flyte-run binary from its own registrations
//!   (`flyte-run script-reference DIR`, a hidden command).
//!
//! - `docs/cli/`: the man page (`flyte-run.1`, `clap_mangen`) and the command-line reference
//!   (`cli.md`), written by the binary from its clap definitions (`flyte-run cli-reference
//!   DIR`, hidden).
//!
//! - `crates/operator/crd/taskactions.flyte.org.yaml`: the TaskAction CRD, from the Rust types
//!   in flyte-operator (`crd::crd_yaml`).
//!
//! `--check` regenerates into a temporary directory and fails when a committed file differs,
//! is missing, or is left over from something no longer generated.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::ci::{IDL_PACKAGES, IDL_PROBE, ensure_venv, run_checked, workspace_root};

/// The proto files whose services flyte-run serves or calls; their imports come along.
pub(crate) const ROOT_FILES: &[&str] = &[
    "flyteidl2/cluster/service.proto",
    "flyteidl2/dataproxy/dataproxy_service.proto",
    "flyteidl2/auth/auth_service.proto",
    "flyteidl2/project/project_service.proto",
    "flyteidl2/workflow/events_proxy_service.proto",
    "flyteidl2/workflow/run_logs_service.proto",
    "flyteidl2/workflow/run_service.proto",
];

/// Our own protos, under `crates/idl/proto/`.
pub(crate) const OWN_FILES: &[&str] = &["flyterun/sandbox/v1/sandbox.proto"];

const SCRIPT: &str = include_str!("descriptors.py");
const DESCRIPTORS: &str = "crates/idl/descriptors";
const DESCRIPTOR_FILES: &[&str] = &[
    "flyteidl2.binpb",
    "flyteidl2.files",
    "flyterun.binpb",
    "flyterun.files",
];
/// The TaskAction CRD, generated from flyte-operator's types.
pub(crate) const CRD_FILE: &str = "crates/operator/crd/taskactions.flyte.org.yaml";
/// Every file in this directory is generated (a file no longer generated is stale too).
const RHAI_DOCS: &str = "docs/rhai";
const CLI_DOCS: &str = "docs/cli";

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => bail!("usage: cargo xtask codegen [--check]"),
    };
    let root = workspace_root()?;
    ensure_venv(&root, "idl-venv", IDL_PACKAGES, IDL_PROBE)?;
    let scratch = root.join("target/codegen");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).context("cannot empty target/codegen")?;
    }
    std::fs::create_dir_all(scratch.join(DESCRIPTORS)).context("cannot create target/codegen")?;
    generate(&root, &scratch.join(DESCRIPTORS))?;
    generate_from_binary("script-reference", &scratch.join(RHAI_DOCS))?;
    generate_from_binary("cli-reference", &scratch.join(CLI_DOCS))?;

    // (path in the repository, fresh contents or None for a file to delete)
    let mut outputs: Vec<(String, Option<Vec<u8>>)> = vec![(
        CRD_FILE.to_owned(),
        Some(flyte_operator::crd::crd_yaml().into_bytes()),
    )];
    for name in DESCRIPTOR_FILES {
        let rel = format!("{DESCRIPTORS}/{name}");
        outputs.push((rel.clone(), Some(std::fs::read(scratch.join(&rel))?)));
    }
    for docs in [RHAI_DOCS, CLI_DOCS] {
        let fresh_docs = file_names(&scratch.join(docs))?;
        for name in &fresh_docs {
            let rel = format!("{docs}/{name}");
            outputs.push((rel.clone(), Some(std::fs::read(scratch.join(&rel))?)));
        }
        for name in file_names(&root.join(docs)).unwrap_or_default() {
            if !fresh_docs.contains(&name) {
                outputs.push((format!("{docs}/{name}"), None));
            }
        }
    }

    let mut stale = Vec::new();
    for (rel, fresh) in &outputs {
        let path = root.join(rel);
        if std::fs::read(&path).ok() == *fresh {
            continue;
        }
        if check {
            stale.push(rel.clone());
            continue;
        }
        if let Some(bytes) = fresh {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {rel}");
        } else {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            println!("removed {rel}");
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated files are stale: {}; run `cargo xtask codegen` and commit the result",
            stale.join(", ")
        );
    }
    println!("codegen: {} file(s) current", outputs.len());
    Ok(())
}

/// The names of the files in `dir`, sorted.
fn file_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Documents the flyte-run binary writes from its own definitions (`flyte-run COMMAND DIR`,
/// a hidden command).
fn generate_from_binary(command: &str, out: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_checked(
        Command::new(cargo)
            .args([
                "run",
                "--quiet",
                "--locked",
                "-p",
                "flyte-run",
                "--",
                command,
            ])
            .arg(out),
    )
    .with_context(|| format!("cannot run flyte-run {command}"))
}

fn generate(root: &Path, out: &Path) -> anyhow::Result<()> {
    let script = out.join("descriptors.py");
    std::fs::write(&script, SCRIPT)?;
    run_checked(
        Command::new(root.join("target/idl-venv/bin/python"))
            .arg(&script)
            .arg(out.join(DESCRIPTOR_FILES[0]))
            .arg(out.join(DESCRIPTOR_FILES[1]))
            .args(ROOT_FILES),
    )
    .context("cannot extract the flyteidl2 descriptors")?;
    run_checked(
        Command::new(root.join("target/idl-venv/bin/python"))
            .arg(&script)
            .arg("--compile")
            .arg(root.join("crates/idl/proto"))
            .arg(out.join(DESCRIPTOR_FILES[2]))
            .arg(out.join(DESCRIPTOR_FILES[3]))
            .args(OWN_FILES),
    )
    .context("cannot compile crates/idl/proto")
}
