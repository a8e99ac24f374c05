//! `cargo xtask ci`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail, ensure};

/// Debian packages the tests need, and a file each one provides.
const PREREQUISITES: &[(&str, &str)] = &[
    ("openssh-server", "/usr/sbin/sshd"),
    ("openssh-client", "/usr/bin/ssh"),
    // chattr: tests running as root make directories immutable to test read-only cases.
    ("e2fsprogs", "/usr/bin/chattr"),
    // curl: tests probe HTTP endpoints the way a cluster's readiness probe does.
    ("curl", "/usr/bin/curl"),
    // git: the connections tests clone over ssh from repositories they make.
    ("git", "/usr/bin/git"),
    // script: the progress test gives flyte-run a pseudo-terminal with util-linux `script`.
    ("bsdutils", "/usr/bin/script"),
    // python3: the kubectl stand-in serves a forwarded port with `python3 -m http.server`, and
    // the interop venvs need it.
    ("python3-venv", "/usr/bin/python3"),
    // tinyproxy: a real HTTP proxy for Flyte's admin.httpProxyURL.
    ("tinyproxy", "/usr/bin/tinyproxy"),
    // openssl: the test Kubernetes API server's service-account signing key.
    ("openssl", "/usr/bin/openssl"),
];

const CLIPPY: &[&str] = &[
    "clippy",
    "--workspace",
    "--all-targets",
    "--locked",
    "--",
    "-D",
    "warnings",
];
const NEXTEST: &[&str] = &[
    "nextest",
    "run",
    "--workspace",
    "--locked",
    "--no-fail-fast",
];
const DOCTESTS: &[&str] = &["test", "--workspace", "--locked", "--doc"];
const CARGO_TEST: &[&str] = &["test", "--workspace", "--locked", "--no-fail-fast"];

/// `cargo xtask tools`: what the tests need, and nothing else.
pub(crate) fn tools() -> anyhow::Result<()> {
    let mut timings = Vec::new();
    install_tools(&workspace_root()?, &mut timings)
}

fn install_tools(root: &Path, timings: &mut Vec<(String, f64)>) -> anyhow::Result<()> {
    step(timings, "prerequisites", ensure_prerequisites)?;
    step(timings, "interop venvs", || {
        ensure_venv(
            root,
            "interop-venv",
            INTEROP_PACKAGES,
            "import flyte._debug.ssh, websockets.sync.client",
        )?;
        // flyte==2.12.1 pins an older flyteidl2, so the conformance check gets its own venv.
        ensure_venv(root, "idl-venv", IDL_PACKAGES, IDL_PROBE)
    })?;
    step(timings, "go tools", ensure_go_tools)
}

/// `cargo package` for every crate that is published (testkit, xtask and the examples are not).
const PACKAGE: &[&str] = &[
    "package",
    "--workspace",
    "--exclude",
    "flyte-testkit",
    "--exclude",
    "xtask",
    "--exclude",
    "flyte-examples",
    "--no-verify",
    "--locked",
    "--allow-dirty",
    "--quiet",
];

pub(crate) fn run() -> anyhow::Result<()> {
    let root = workspace_root()?;
    let mut timings = Vec::new();
    let mut counts = TestCounts::default();
    install_tools(&root, &mut timings)?;
    step(&mut timings, "codegen --check", || {
        crate::codegen::run(&["--check".to_owned()])
    })?;
    step(&mut timings, "tidy", crate::tidy::run)?;
    step(&mut timings, "fmt", || {
        cargo(&root, &["fmt", "--all", "--check"])
    })?;
    step(&mut timings, "clippy", || cargo(&root, CLIPPY))?;
    // The examples built on their own: each library crate compiles with only the features
    // its dependents ask for (the whole workspace's build unifies features and can hide that).
    step(&mut timings, "examples alone", || {
        cargo(
            &root,
            &[
                "check",
                "--locked",
                "--quiet",
                "-p",
                "flyte-examples",
                "--examples",
            ],
        )
    })?;
    // Every library crate packages (without compiling each package again: the tests did).
    step(&mut timings, "package", || {
        cargo(&root, PACKAGE)?;
        println!(
            "publish order: {}",
            crate::release::publish_order(&root)?.join(", ")
        );
        Ok(())
    })?;
    if has_nextest() {
        step(&mut timings, "tests (nextest)", || {
            cargo_counting(&root, NEXTEST, &mut counts)
        })?;
        // nextest does not run doctests.
        step(&mut timings, "doctests", || {
            cargo_counting(&root, DOCTESTS, &mut counts)
        })?;
    } else {
        step(&mut timings, "tests (cargo test)", || {
            cargo_counting(&root, CARGO_TEST, &mut counts)
        })?;
    }
    println!("\nxtask ci: all steps passed");
    for (name, secs) in &timings {
        println!("  {name:<20} {secs:>7.1} s");
    }
    if counts.passed == 0 {
        bail!("no test ran");
    }
    // The plain closing line CI reads: the total over nextest and the doctests.
    println!("tests: {} passed, {} failed", counts.passed, counts.failed);
    Ok(())
}

fn step(
    timings: &mut Vec<(String, f64)>,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    println!("==> {name}");
    let started = Instant::now();
    let result = f();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "<== {name}: {} in {secs:.1} s",
        if result.is_ok() { "ok" } else { "FAILED" }
    );
    timings.push((name.to_owned(), secs));
    result.with_context(|| format!("step `{name}` failed"))
}

fn missing_packages() -> Vec<&'static str> {
    PREREQUISITES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect()
}

fn ensure_prerequisites() -> anyhow::Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        let all: Vec<_> = PREREQUISITES.iter().map(|p| p.0).collect();
        println!("all present: {}", all.join(", "));
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the tests need these Debian packages, which are missing: {list}\n\
             install them with: sudo apt-get install -y {list}\n\
             (run as root, `cargo xtask ci` installs them itself)",
            list = missing.join(" ")
        );
    }
    println!("installing {}", missing.join(" "));
    run_checked(Command::new("apt-get").args(["update", "-q"]))?;
    run_checked(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    let still = missing_packages();
    if !still.is_empty() {
        bail!(
            "apt-get finished but these are still missing: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// Build the Go tools the tests use (a real OIDC provider, a Kubernetes API server with etcd,
/// its scheduler, kwok) into their cache outside the repository, each once per pinned version,
/// saying how long each build took.
fn ensure_go_tools() -> anyhow::Result<()> {
    for tool in flyte_testkit::GO_TOOLS {
        let binary = tool.binary();
        if binary.exists() {
            println!("{} is ready", binary.display());
            continue;
        }
        println!(
            "building {}@{} into {}",
            tool.package,
            tool.version,
            tool.bin_dir().display()
        );
        let started = std::time::Instant::now();
        match tool.build {
            flyte_testkit::GoBuild::Install => run_checked(
                Command::new("go")
                    .arg("install")
                    .arg(format!("{}@{}", tool.package, tool.version))
                    .env("GOBIN", tool.bin_dir()),
            ),
            flyte_testkit::GoBuild::InModule {
                module,
                staging_version,
            } => build_in_module(tool, module, staging_version),
        }
        .with_context(|| {
            format!(
                "cannot build {} with Go: install Go (the module proxy must be reachable)",
                tool.name
            )
        })?;
        ensure!(
            binary.exists(),
            "the build did not make {}",
            binary.display()
        );
        println!(
            "built {} in {:.0} s",
            tool.name,
            started.elapsed().as_secs_f64()
        );
    }
    // Peers' files the tests read from the module cache (Knative's CRD).
    for file in flyte_testkit::GO_MODULE_FILES {
        if file.location().exists() {
            continue;
        }
        run_checked(
            Command::new("go")
                .args(["mod", "download"])
                .arg(format!("{}@{}", file.module, file.version)),
        )
        .with_context(|| format!("cannot download {}@{}", file.module, file.version))?;
        ensure!(
            file.location().exists(),
            "{}@{} has no {}",
            file.module,
            file.version,
            file.path
        );
    }
    Ok(())
}

/// `go build` of `tool.package` inside a build module that requires `module` at the tool's
/// version (its own `replace` directives do not apply to a dependency, which is why `go install`
/// refuses it): Kubernetes' `./staging/src/k8s.io/X` replaces become `k8s.io/X
/// <staging_version>`, the published copies of the same code.
fn build_in_module(
    tool: &flyte_testkit::GoTool,
    module: &str,
    staging_version: Option<&str>,
) -> anyhow::Result<()> {
    let dir = flyte_testkit::tools_dir().join(format!(
        "build-{}-{}",
        module.replace('/', "_"),
        tool.version
    ));
    std::fs::create_dir_all(&dir)?;
    let mut replaces = Vec::new();
    if let Some(staging) = staging_version {
        let out = Command::new("go")
            .args(["mod", "download", "-json"])
            .arg(format!("{module}@{}", tool.version))
            .output()
            .context("cannot run go mod download")?;
        ensure!(
            out.status.success(),
            "go mod download {module}@{} failed: {}",
            tool.version,
            String::from_utf8_lossy(&out.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let go_mod = info["GoMod"]
            .as_str()
            .context("go mod download named no go.mod")?;
        for line in std::fs::read_to_string(go_mod)?.lines() {
            let mut words = line.split_whitespace();
            if let (Some(path), Some("=>"), Some(target)) =
                (words.next(), words.next(), words.next())
                && target.starts_with("./staging/")
            {
                replaces.push(format!("\t{path} => {path} {staging}"));
            }
        }
    }
    let mut go_mod = format!(
        "module flyte-run-tools-build\n\ngo 1.24.0\n\nrequire {module} {}\n",
        tool.version
    );
    if !replaces.is_empty() {
        go_mod = go_mod + "\nreplace (\n" + &replaces.join("\n") + "\n)\n";
    }
    std::fs::write(dir.join("go.mod"), go_mod)?;
    // A tools file keeps the package in the build list for `go mod tidy`.
    std::fs::write(
        dir.join("tools.go"),
        format!(
            "//go:build tools\n\npackage tools\n\nimport _ \"{}\"\n",
            tool.package
        ),
    )?;
    run_checked(Command::new("go").args(["mod", "tidy"]).current_dir(&dir))?;
    run_checked(
        Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(tool.binary())
            .arg(tool.package)
            .current_dir(&dir),
    )
}

/// Python packages the interop tests run: Flyte's own pod-side SSH debug server and a standard
/// WebSocket client.
const INTEROP_PACKAGES: &[&str] = &["flyte==2.12.1", "websockets"];
/// The official flyteidl2 message classes our JSON is checked against, and the protobuf compiler
/// (`protoc`, packaged for `PyPI`) that `cargo xtask codegen` compiles our own protos with.
pub(crate) const IDL_PACKAGES: &[&str] = &["flyteidl2==2.0.53", "grpcio-tools==1.85.1"];
/// What a ready IDL venv can import.
pub(crate) const IDL_PROBE: &str = "import flyteidl2.workflow.run_service_pb2, grpc_tools.protoc";

/// Create `target/<name>` with `packages` unless it can already run `probe`.
pub(crate) fn ensure_venv(
    root: &Path,
    name: &str,
    packages: &[&str],
    probe: &str,
) -> anyhow::Result<()> {
    let venv = root.join("target").join(name);
    let python = venv.join("bin/python");
    let ready = || {
        Command::new(&python)
            .args(["-c", probe])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ready() {
        println!("{} is ready", venv.display());
        return Ok(());
    }
    run_checked(Command::new("python3").args(["-m", "venv"]).arg(&venv)).context(
        "cannot create a Python venv: install python3 and python3-venv (as root: apt-get install -y python3-venv)",
    )?;
    run_checked(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .args(packages),
    )
    .with_context(|| format!("cannot pip install {}", packages.join(" ")))?;
    ensure!(
        ready(),
        "the venv at {} still cannot run `{probe}`",
        venv.display()
    );
    Ok(())
}

/// Tests counted from the runners' own summary lines.
#[derive(Debug, Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
}

impl TestCounts {
    /// Read `N passed` / `N failed` from a nextest `Summary` line or a libtest `test result:` line.
    fn add_from_line(&mut self, line: &str) {
        let line = line.trim();
        if !(line.starts_with("Summary") || line.starts_with("test result:")) {
            return;
        }
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            let Ok(n) = pair[0].parse::<u64>() else {
                continue;
            };
            match pair[1] {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Run cargo with its output passed through as it comes, counting tests from the summaries.
fn cargo_counting(root: &Path, args: &[&str], counts: &mut TestCounts) -> anyhow::Result<()> {
    let mut child = Command::new(cargo_bin())
        .current_dir(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start cargo {}", args.join(" ")))?;
    let stderr = child.stderr.take().context("stderr was piped")?;
    // nextest reports on stderr, libtest on stdout: read both, one on a thread.
    let stderr_lines = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            seen.push(line);
        }
        seen
    });
    let stdout = child.stdout.take().context("stdout was piped")?;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        counts.add_from_line(&line);
    }
    for line in stderr_lines.join().unwrap_or_default() {
        counts.add_from_line(&line);
    }
    let status = child.wait().context("cannot wait for cargo")?;
    if !status.success() {
        bail!("cargo {} exited with {status}", args.join(" "));
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn has_nextest() -> bool {
    Command::new(cargo_bin())
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    run_checked(Command::new(cargo_bin()).current_dir(root).args(args))
}

pub(crate) fn run_checked(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    if !status.success() {
        bail!("{shown} exited with {status}");
    }
    Ok(())
}

pub(crate) fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_owned)
        .context("xtask lives one level below the workspace root")
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn counts_come_from_runner_summaries_only() {
        let mut counts = TestCounts::default();
        for line in [
            "     Summary [   3.406s] 44 tests run: 44 passed, 0 skipped",
            "     Summary [   1.000s] 10 tests run: 8 passed, 2 failed, 1 skipped",
            "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
            "test result: FAILED. 3 passed; 4 failed; 0 ignored",
            "        PASS [   0.039s] ( 1/19) some test 7 passed",
        ] {
            counts.add_from_line(line);
        }
        assert_eq!((counts.passed, counts.failed), (56, 6));
    }
}
