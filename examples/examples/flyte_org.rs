//! Which org Flyte's SDK sends for an endpoint without `task.org`, using only `flyte-config`.
//!
//!     cargo run -p flyte-examples --example flyte_org -- dns:///tenant.cloud.example.com
#![allow(clippy::print_stdout)]

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args().nth(1).ok_or("usage: flyte_org ENDPOINT")?;
    match flyte_config::org_from_endpoint(&endpoint) {
        Some(org) => println!("{org}"),
        None => println!("(no org: the host has two labels or fewer)"),
    }
    Ok(())
}
