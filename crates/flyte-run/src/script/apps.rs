//! `apps::` — Flyte 2 apps as Knative services (flyte-operator's `AppClient`), on the cluster the
//! kubeconfig names (`KUBECONFIG`, `~/.kube/config`) or the pod's own service account.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flyte_operator::{AppClient, AppEvent, AppId, AppSpec, AppStatus, DeployOutcome};
use futures_util::StreamExt as _;
use rhai::{Array, Dynamic, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};

use super::Host;
use super::opts::{
    ScriptResult, Text, documented, int_as, options, script_err, seconds, to_map, with_options,
};

/// What `apps::deploy` takes.
#[derive(Deserialize)]
struct SpecIn {
    image: Option<String>,
    args: Option<Vec<String>>,
    env: Option<BTreeMap<String, Text>>,
    port: Option<rhai::INT>,
    min_replicas: Option<rhai::INT>,
    max_replicas: Option<rhai::INT>,
}

/// An app as scripts see it.
#[derive(Serialize)]
struct AppOut {
    kservice_name: String,
    state: String,
    url: Option<String>,
    message: Option<String>,
    image: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    port: Option<u16>,
    min_replicas: Option<u32>,
    max_replicas: Option<u32>,
}

impl From<AppStatus> for AppOut {
    fn from(app: AppStatus) -> Self {
        Self {
            kservice_name: app.kservice_name,
            state: format!("{:?}", app.state),
            url: app.url,
            message: app.message,
            image: app.spec.image,
            args: app.spec.args,
            env: app.spec.env,
            port: app.spec.port,
            min_replicas: app.spec.min_replicas,
            max_replicas: app.spec.max_replicas,
        }
    }
}

#[derive(Deserialize)]
struct ListOptions {
    project: Option<String>,
    domain: Option<String>,
    limit: Option<rhai::INT>,
    token: Option<String>,
}

#[derive(Serialize)]
struct Page {
    apps: Vec<AppOut>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct WatchOptions {
    project: Option<String>,
    domain: Option<String>,
    name: Option<String>,
    timeout: Option<rhai::INT>,
    max_events: Option<rhai::INT>,
}

#[derive(Serialize)]
struct EventOut {
    kind: &'static str,
    kservice_name: String,
    app: Option<AppOut>,
}

#[derive(Serialize)]
struct ReplicaOut {
    name: String,
    phase: String,
    ready: bool,
    revision: Option<String>,
}

/// The app client on the kubeconfig's cluster, made on the playbook's first `apps::` call and
/// kept (the kubeconfig is read once).
fn apps(ctx: &NativeCallContext<'_>, host: &Host, func: &str) -> ScriptResult<AppClient> {
    let mut cached = host
        .apps
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(client) = cached.as_ref() {
        return Ok(client.clone());
    }
    host.block_on(kube::Client::try_default())
        .map(|client| {
            let apps = AppClient::new(client);
            *cached = Some(apps.clone());
            apps
        })
        .map_err(|e| {
            script_err(
                ctx,
                format!(
                    "{func}: cannot find a Kubernetes cluster ({}: {}); set KUBECONFIG to a working kubeconfig",
                    crate::operator::kubeconfig_source(),
                    crate::operator::root_cause(&e)
                ),
            )
        })
}

fn deploy(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    app: &AppId,
    spec: &Map,
) -> ScriptResult<String> {
    const FUNC: &str = "apps::deploy";
    let spec: SpecIn = options(ctx, FUNC, spec)?;
    let count = |what: &'static str, v: Option<rhai::INT>| {
        int_as::<u32>(ctx, FUNC, (what, "a count (0 or more)"), v)
    };
    let spec = AppSpec {
        image: spec
            .image
            .ok_or_else(|| script_err(ctx, format!("{FUNC}: the spec needs `image`")))?,
        args: spec.args.unwrap_or_default(),
        env: spec
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect(),
        port: int_as::<u16>(ctx, FUNC, ("port", "a port number (1-65535)"), spec.port)?,
        min_replicas: count("min_replicas", spec.min_replicas)?,
        max_replicas: count("max_replicas", spec.max_replicas)?,
    };
    if host.dry_run {
        println!(
            "dry-run: deploy app {}/{}/{} image {}",
            app.project, app.domain, app.name, spec.image
        );
        return Ok("DryRun".to_owned());
    }
    let client = apps(ctx, host, FUNC)?;
    let outcome = host
        .block_on(client.deploy(app, &spec))
        .map_err(|e| script_err(ctx, format!("{FUNC}: {e}")))?;
    Ok(match outcome {
        DeployOutcome::Created => "Created",
        DeployOutcome::Unchanged => "Unchanged",
        DeployOutcome::Updated => "Updated",
    }
    .to_owned())
}

fn watch(ctx: &NativeCallContext<'_>, host: &Host, opts: &Map) -> ScriptResult<Array> {
    const FUNC: &str = "apps::watch";
    let opts: WatchOptions = options(ctx, FUNC, opts)?;
    let timeout =
        host.bound(seconds(ctx, FUNC, "timeout", opts.timeout)?.unwrap_or(Duration::from_secs(30)));
    let max = int_as::<usize>(
        ctx,
        FUNC,
        ("max_events", "a count (0 or more)"),
        opts.max_events,
    )?
    .unwrap_or(usize::MAX);
    let app = match (opts.project, opts.domain, opts.name) {
        (Some(p), Some(d), Some(n)) => Some(AppId::new(&p, &d, &n)),
        (None, None, None) => None,
        _ => {
            return Err(script_err(
                ctx,
                format!(
                    "{FUNC}: give project, domain and name to follow one app, or none of them to follow all"
                ),
            ));
        }
    };
    let client = apps(ctx, host, FUNC)?;
    let stream = client
        .watch(app.as_ref())
        .map_err(|e| script_err(ctx, format!("{FUNC}: {e}")))?;
    let events = host.block_on(async {
        let mut events = Vec::new();
        let collect = stream.take(max).for_each(|event| {
            events.push(event);
            std::future::ready(())
        });
        // The watch ends at its budget: what arrived by then is the answer.
        let _ = tokio::time::timeout(timeout, collect).await;
        events
    });
    let mut out = Array::new();
    for event in events {
        let event = match event.map_err(|e| script_err(ctx, format!("{FUNC}: {e}")))? {
            AppEvent::Changed(app) => EventOut {
                kind: "Changed",
                kservice_name: app.kservice_name.clone(),
                app: Some(app.into()),
            },
            AppEvent::Deleted { kservice_name } => EventOut {
                kind: "Deleted",
                kservice_name,
                app: None,
            },
        };
        out.push(to_map(ctx, &event)?.into());
    }
    Ok(out)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let app_args = ["project: String", "domain: String", "name: String"];
    let h = Arc::clone(host);
    documented(
        "deploy",
        &[app_args[0], app_args[1], app_args[2], "spec: Map", "String"],
        "Create or update an app's Knative service: \"Created\", \"Unchanged\" (nothing written) or \"Updated\".\nspec: image, args, env, port, min_replicas, max_replicas.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, project: &str, domain: &str, name: &str, spec: Map| {
            deploy(&ctx, &h, &AppId::new(project, domain, name), &spec)
        },
    );
    let h = Arc::clone(host);
    documented(
        "stop",
        &[app_args[0], app_args[1], app_args[2], "bool"],
        "Scale the app to zero and hide it; false when there is no such app.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>,
              project: &str,
              domain: &str,
              name: &str|
              -> ScriptResult<bool> {
            const FUNC: &str = "apps::stop";
            if h.dry_run {
                println!("dry-run: stop app {project}/{domain}/{name}");
                return Ok(true);
            }
            let client = apps(&ctx, &h, FUNC)?;
            h.block_on(client.stop(&AppId::new(project, domain, name)))
                .map_err(|e| script_err(&ctx, format!("{FUNC}: {e}")))
        },
    );
    register_reads(&mut module, host);
    module
}

/// `apps::get`, `list`, `replicas` and `watch`.
fn register_reads(module: &mut Module, host: &Arc<Host>) {
    let app_args = ["project: String", "domain: String", "name: String"];
    let h = Arc::clone(host);
    documented(
        "get",
        &[app_args[0], app_args[1], app_args[2], "?"],
        "The app: #{ kservice_name, state, url, message, image, args, env, port, min_replicas, max_replicas }, or ().",
    )
    .set_into_module(
        module,
        move |ctx: NativeCallContext<'_>, project: &str, domain: &str, name: &str| -> ScriptResult<Dynamic> {
            const FUNC: &str = "apps::get";
            let client = apps(&ctx, &h, FUNC)?;
            match h
                .block_on(client.get(&AppId::new(project, domain, name)))
                .map_err(|e| script_err(&ctx, format!("{FUNC}: {e}")))?
            {
                Some(app) => Ok(to_map(&ctx, &AppOut::from(app))?.into()),
                None => Ok(Dynamic::UNIT),
            }
        },
    );
    let h = Arc::clone(host);
    with_options!(
        module,
        "apps",
        "list",
        () -> "Map",
        "One page of apps: #{ apps, next } (next: the token for the following page, or ()).\nopts: project, domain, limit (0: all), token.",
        move |ctx: &NativeCallContext<'_>, opts: &Map| -> ScriptResult<Map> {
            const FUNC: &str = "apps::list";
            let opts: ListOptions = options(ctx, FUNC, opts)?;
            let limit = int_as::<u32>(ctx, FUNC, ("limit", "a count (0 or more)"), opts.limit)?
                .unwrap_or(0);
            let client = apps(ctx, &h, FUNC)?;
            let page = h
                .block_on(client.list(
                    opts.project.as_deref(),
                    opts.domain.as_deref(),
                    limit,
                    opts.token,
                ))
                .map_err(|e| script_err(ctx, format!("{FUNC}: {e}")))?;
            to_map(
                ctx,
                &Page {
                    apps: page.apps.into_iter().map(AppOut::from).collect(),
                    next: page.next,
                },
            )
        },
    );
    let h = Arc::clone(host);
    documented(
        "replicas",
        &[app_args[0], app_args[1], app_args[2], "Array"],
        "The pods serving the app: [#{ name, phase, ready, revision }].",
    )
    .set_into_module(
        module,
        move |ctx: NativeCallContext<'_>,
              project: &str,
              domain: &str,
              name: &str|
              -> ScriptResult<Array> {
            const FUNC: &str = "apps::replicas";
            let client = apps(&ctx, &h, FUNC)?;
            let replicas = h
                .block_on(client.replicas(&AppId::new(project, domain, name)))
                .map_err(|e| script_err(&ctx, format!("{FUNC}: {e}")))?;
            replicas
                .into_iter()
                .map(|r| {
                    to_map(
                        &ctx,
                        &ReplicaOut {
                            name: r.name,
                            phase: r.phase,
                            ready: r.ready,
                            revision: r.revision,
                        },
                    )
                    .map(Dynamic::from)
                })
                .collect()
        },
    );
    let h = Arc::clone(host);
    with_options!(
        module,
        "apps",
        "watch",
        () -> "Array",
        "Follow apps for a while: the apps there are (as \"Changed\"), then each change, until the timeout or max_events: [#{ kind, kservice_name, app }].\nopts: project, domain, name (one app), timeout (seconds, default 30), max_events.",
        move |ctx: &NativeCallContext<'_>, opts: &Map| watch(ctx, &h, opts),
    );
}
