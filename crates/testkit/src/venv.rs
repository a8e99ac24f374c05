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
