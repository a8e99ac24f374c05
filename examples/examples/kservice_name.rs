//! Compute the KService name and public URL of a Flyte app, using only `flyte-kservice-naming`.
//!
//!     cargo run -p flyte-examples --example kservice_name -- PROJECT DOMAIN NAME [BASE_DOMAIN]
#![allow(clippy::print_stdout)]

use flyte_kservice_naming::{IngressConfig, kservice_name, public_ingress};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [project, domain, name, rest @ ..] = args.as_slice() else {
        return Err("usage: kservice_name PROJECT DOMAIN NAME [BASE_DOMAIN]".into());
    };
    println!("{}", kservice_name(project, domain, name)?);
    let config = IngressConfig {
        base_domain: rest.first().cloned(),
        ..IngressConfig::default()
    };
    if let Some(url) = public_ingress(project, domain, name, &config)? {
        println!("{url}");
    }
    Ok(())
}
