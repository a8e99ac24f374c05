//! Replace a file atomically with a given mode (whatever the umask), using only `flyte-fs`.
//!
//!     cargo run -p flyte-examples --example atomic_write -- PATH TEXT
#![allow(clippy::print_stdout)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [path, text] = args.as_slice() else {
        return Err("usage: atomic_write PATH TEXT".into());
    };
    flyte_fs::replace(std::path::Path::new(path), text.as_bytes(), 0o600)?;
    println!("wrote {path} (0600)");
    Ok(())
}
