//! The Python venvs `cargo xtask ci` creates under `target/` for tests that check us against
//! Flyte's own Python code. An environment variable points a test at another interpreter.

use std::path::PathBuf;

fn venv_python(name: &str, override_var: &str, contents: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(override_var) {
        return PathBuf::from(p);
    }
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(name)
        .join("bin/python");
    assert!(
        python.exists(),
        "the {name} venv is missing: run `cargo xtask ci` (it creates target/{name} with \
         {contents}) or set {override_var}"
    );
    python
}

/// `target/interop-venv`: `PyPI` `flyte==2.12.1` (CLI, SDK, pod side) and `websockets`;
/// `FLYTE_INTEROP_PYTHON` overrides.
pub fn interop_python() -> PathBuf {
    venv_python(
        "interop-venv",
        "FLYTE_INTEROP_PYTHON",
        "flyte==2.12.1 and websockets",
    )
}

/// `target/idl-venv`: the official message classes of `PyPI` `flyteidl2==2.0.53`;
/// `FLYTEIDL2_PYTHON` overrides.
pub fn idl_python() -> PathBuf {
    venv_python("idl-venv", "FLYTEIDL2_PYTHON", "flyteidl2==2.0.53")
}

/// An executable for `$BROWSER` (one program: Python's `webbrowser` does not split a command
/// line) that plays the person in a sandbox's browser login: `fixtures/headless_browser.py`
/// under the interop venv's Python, written into `dir`. It approves the login's user code with
/// the binary `FLYTE_RUN_BIN` names (`--deny` when `HEADLESS_DECISION=deny`).
pub fn headless_browser(dir: &std::path::Path) -> PathBuf {
    browser_wrapper(dir, "headless_browser")
}

/// The same for a login to zitadel/oidc's example OP (`fixtures/oidc_browser.py`: its login
/// form filled with the test user).
pub fn oidc_browser(dir: &std::path::Path) -> PathBuf {
    browser_wrapper(dir, "oidc_browser")
}

fn browser_wrapper(dir: &std::path::Path, fixture: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(fixture);
    let script = format!("{}/fixtures/{fixture}.py", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec {} {script} \"$@\"\n",
            interop_python().display()
        ),
    )
    .expect("the browser wrapper can be written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("the browser wrapper can be made executable");
    path
}
