//! Create (once) and show an SSH debug key pair, using only `flyte-keys`.
//!
//!     cargo run -p flyte-examples --example debug_keypair -- DIR
#![allow(clippy::print_stdout)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: debug_keypair DIR (for example ~/.flyte/ssh-debug)")?;
    let pair = flyte_keys::ensure_keypair(std::path::Path::new(&dir))?;
    println!("private key: {}", pair.private_key_path.display());
    println!("public key:  {}", pair.public_key);
    println!("fingerprint: {}", pair.fingerprint);
    Ok(())
}
