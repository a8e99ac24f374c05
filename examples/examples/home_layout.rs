//! Where Flyte's client and flyte-run keep their files, and whether a local sandbox serves now,
//! using only `flyte-home`:
//!
//!     cargo run -p flyte-examples --example home_layout -- "$HOME"
#![allow(clippy::print_stdout)]

use flyte_home::FlyteHome;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let home = std::env::args()
        .nth(1)
        .ok_or("usage: home_layout HOME_DIR")?;
    let layout = FlyteHome::new(home);
    let debug = layout.debug();
    for (what, path) in [
        ("flyte-run settings", layout.settings_file()),
        ("debug key pair", debug.private_key()),
        ("pinned debug host keys", debug.known_hosts()),
        ("Flyte's bearer cache", debug.bearer_cache()),
        ("stored API key", debug.api_key()),
        ("git host keys", layout.git_known_hosts()),
    ] {
        println!("{what:>24}: {}", path.display());
    }
    match layout.sandbox().running() {
        Some(sandbox) => println!(
            "a sandbox serves {} (pid {})",
            sandbox.endpoint, sandbox.pid
        ),
        None => println!("no sandbox serves {}", layout.sandbox().path().display()),
    }
    Ok(())
}
