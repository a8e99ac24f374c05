//! What a Flyte API key is for, without showing its secret, using only `flyte-auth`. The key
//! comes on standard input, never in the arguments (where `ps` would show it):
//!
//!     printenv FLYTE_API_KEY | cargo run -p flyte-examples --example api_key_info -- flyte.example.com
#![allow(clippy::print_stdout)]

use flyte_auth::{ApiKey, key_matches_endpoint};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let authority = std::env::args()
        .nth(1)
        .ok_or("usage: api_key_info HOST[:PORT] < KEY")?;
    let mut encoded = String::new();
    std::io::stdin().read_line(&mut encoded)?;
    let key = ApiKey::decode(encoded.trim())?;
    println!("endpoint:  {}", key.endpoint);
    println!("client id: {}", key.client_id);
    println!(
        "org:       {}",
        if key.org.is_empty() {
            "(none)"
        } else {
            &key.org
        }
    );
    // Debug output names the fields but never the secret.
    println!("{key:?}");
    let usable = key_matches_endpoint(&key.endpoint, &authority, true);
    println!(
        "sent to https://{authority}: {}",
        if usable {
            "yes"
        } else {
            "no (the key belongs to another endpoint)"
        }
    );
    Ok(())
}
