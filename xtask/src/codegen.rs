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
//! `--check` regenerates into a temporary directory and fails when a committed file differs.

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
    "flyteidl2/workflow/run_logs_service.proto",
    "flyteidl2/workflow/run_service.proto",
];

/// Our own protos, under `crates/idl/proto/`.
pub(crate) const OWN_FILES: &[&str] = &["flyterun/sandbox/v1/sandbox.proto"];

const SCRIPT: &str = include_str!("descriptors.py");
const OUTPUTS: &[&str] = &[
    "flyteidl2.binpb",
    "flyteidl2.files",
    "flyterun.binpb",
    "flyterun.files",
];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => bail!("usage: cargo xtask codegen [--check]"),
    };
    let root = workspace_root()?;
    ensure_venv(&root, "idl-venv", IDL_PACKAGES, IDL_PROBE)?;
    let committed = root.join("crates/idl/descriptors");
    let scratch = root.join("target/codegen");
    std::fs::create_dir_all(&scratch).context("cannot create target/codegen")?;
    generate(&root, &scratch)?;
    let mut stale = Vec::new();
    for name in OUTPUTS {
        let fresh = std::fs::read(scratch.join(name))?;
        let path = committed.join(name);
        if std::fs::read(&path).ok().as_deref() == Some(fresh.as_slice()) {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::create_dir_all(&committed)?;
            std::fs::write(&path, fresh)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated files are stale: {}; run `cargo xtask codegen` and commit the result",
            stale.join(", ")
        );
    }
    println!("codegen: {} file(s) current", OUTPUTS.len());
    Ok(())
}

fn generate(root: &Path, out: &Path) -> anyhow::Result<()> {
    let script = out.join("descriptors.py");
    std::fs::write(&script, SCRIPT)?;
    run_checked(
        Command::new(root.join("target/idl-venv/bin/python"))
            .arg(&script)
            .arg(out.join(OUTPUTS[0]))
            .arg(out.join(OUTPUTS[1]))
            .args(ROOT_FILES),
    )
    .context("cannot extract the flyteidl2 descriptors")?;
    run_checked(
        Command::new(root.join("target/idl-venv/bin/python"))
            .arg(&script)
            .arg("--compile")
            .arg(root.join("crates/idl/proto"))
            .arg(out.join(OUTPUTS[2]))
            .arg(out.join(OUTPUTS[3]))
            .args(OWN_FILES),
    )
    .context("cannot compile crates/idl/proto")
}
