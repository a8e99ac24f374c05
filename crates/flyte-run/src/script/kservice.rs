//! `kservice::` — Knative service names and URLs (flyte-kservice-naming).

use rhai::{Dynamic, Map, Module, NativeCallContext};
use serde::Deserialize;

use super::opts::{ScriptResult, documented, int_as, options, script_err, with_options};

#[derive(Deserialize)]
struct IngressOptions {
    base_domain: Option<String>,
    scheme: Option<String>,
    port: Option<rhai::INT>,
}

fn public_ingress(
    ctx: &NativeCallContext<'_>,
    (project, domain, name): (&str, &str, &str),
    opts: &Map,
) -> ScriptResult<Dynamic> {
    const FUNC: &str = "kservice::public_ingress";
    let opts: IngressOptions = options(ctx, FUNC, opts)?;
    let config = flyte_kservice_naming::IngressConfig {
        base_domain: opts.base_domain,
        scheme: opts.scheme,
        port: int_as::<u16>(ctx, FUNC, ("port", "a port number (1-65535)"), opts.port)?,
    };
    let url = flyte_kservice_naming::public_ingress(project, domain, name, &config)
        .map_err(|e| script_err(ctx, e))?;
    Ok(url.map_or(Dynamic::UNIT, Dynamic::from))
}

pub(super) fn module() -> Module {
    let mut module = Module::new();
    // kservice::name(project, domain, name) -> string
    documented(
        "name",
        &[
            "project: String",
            "domain: String",
            "name: String",
            "String",
        ],
        "The Knative service name of an app, exactly as Flyte's cluster side computes it.",
    )
    .set_into_module(
        &mut module,
        |ctx: NativeCallContext<'_>,
         project: &str,
         domain: &str,
         name: &str|
         -> ScriptResult<String> {
            flyte_kservice_naming::kservice_name(project, domain, name)
                .map_err(|e| script_err(&ctx, e))
        },
    );
    // kservice::public_ingress(project, domain, name[, opts]) -> string or ()
    with_options!(
        &mut module,
        "kservice",
        "public_ingress",
        (project: &str => "project: String", domain: &str => "domain: String", name: &str => "name: String") -> "?",
        "The app's public URL, or () without a base domain.\nopts: base_domain, scheme, port.",
        |ctx: &NativeCallContext<'_>, project: &str, domain: &str, name: &str, opts: &Map| {
            public_ingress(ctx, (project, domain, name), opts)
        },
    );
    module
}
