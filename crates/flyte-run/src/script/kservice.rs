//! `kservice::` — Knative service names and URLs (flyte-kservice-naming).

use rhai::{Dynamic, Map, Module, NativeCallContext};

use super::opts::{Opts, ScriptResult, documented, script_err};

fn public_ingress(
    ctx: &NativeCallContext<'_>,
    (project, domain, name): (&str, &str, &str),
    opts: &Map,
) -> ScriptResult<Dynamic> {
    let opts = Opts::new(
        ctx,
        "kservice::public_ingress",
        opts,
        &["base_domain", "scheme", "port"],
    )?;
    let config = flyte_kservice_naming::IngressConfig {
        base_domain: opts.string("base_domain")?,
        scheme: opts.string("scheme")?,
        port: opts.int_as::<u16>("port", "a port number (1-65535)")?,
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
    documented(
        "public_ingress",
        &["project: String", "domain: String", "name: String", "?"],
        "`kservice::public_ingress(project, domain, name, #{})`.",
    )
    .set_into_module(
        &mut module,
        |ctx: NativeCallContext<'_>, p: &str, d: &str, n: &str| {
            public_ingress(&ctx, (p, d, n), &Map::new())
        },
    );
    documented(
        "public_ingress",
        &[
            "project: String",
            "domain: String",
            "name: String",
            "opts: Map",
            "?",
        ],
        "The app's public URL, or () without a base domain.\nopts: base_domain, scheme, port.",
    )
    .set_into_module(
        &mut module,
        |ctx: NativeCallContext<'_>, p: &str, d: &str, n: &str, opts: Map| {
            public_ingress(&ctx, (p, d, n), &opts)
        },
    );
    module
}
