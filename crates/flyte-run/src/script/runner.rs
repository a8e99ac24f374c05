//! `runner::` — commands, kubectl, curl and port-forwards inside the runner VM
//! (flyte-runner-proxy).

use std::sync::Arc;
use std::time::Duration;

use flyte_runner_proxy::{CurlRequest, Output};
use rhai::{Array, Dynamic, FnPtr, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};

use super::Host;
use super::opts::{
    ScriptResult, Text, documented, options, script_err, seconds, string_array, to_map,
    with_options,
};
use super::ssh::Ran;

const DEFAULT_TIMEOUT: Duration = Duration::from_mins(2);

fn ran(output: Output) -> Ran {
    Ran {
        code: i64::from(output.code),
        stdout: output.stdout,
        stderr: output.stderr,
    }
}

/// The options `runner::run` and `runner::kubectl` take.
#[derive(Deserialize)]
struct CommandOptions {
    timeout: Option<rhai::INT>,
    input: Option<String>,
    check: Option<bool>,
}

/// What `runner::curl` takes.
#[derive(Deserialize)]
struct CurlOptions {
    method: Option<String>,
    headers: Option<std::collections::BTreeMap<String, Text>>,
    data: Option<String>,
    timeout: Option<rhai::INT>,
    insecure: Option<bool>,
}

/// What `runner::curl` returns.
#[derive(Serialize, Default)]
struct Response {
    status: i64,
    body: String,
}

/// [`CommandOptions`] checked.
struct CommandOpts {
    timeout: Duration,
    input: Option<Vec<u8>>,
    check: bool,
}

fn command_opts(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    func: &'static str,
    opts: &Map,
) -> ScriptResult<CommandOpts> {
    let o: CommandOptions = options(ctx, func, opts)?;
    Ok(CommandOpts {
        timeout: host.bound(seconds(ctx, func, "timeout", o.timeout)?.unwrap_or(DEFAULT_TIMEOUT)),
        input: o.input.map(String::into_bytes),
        check: o.check.unwrap_or(false),
    })
}

fn finish(
    ctx: &NativeCallContext<'_>,
    func: &str,
    opts: &CommandOpts,
    result: flyte_runner_proxy::Result<Output>,
) -> ScriptResult<Map> {
    let output = result.map_err(|e| script_err(ctx, format!("{func}: {e}")))?;
    if opts.check && output.code != 0 {
        return Err(script_err(
            ctx,
            format!(
                "{func}: exited with {} in the runner: {}",
                output.code,
                output.stderr.trim_end()
            ),
        ));
    }
    to_map(ctx, &ran(output))
}

/// `runner::run(command, opts) -> #{ code, stdout, stderr }`
fn run(ctx: &NativeCallContext<'_>, host: &Host, command: &str, opts: &Map) -> ScriptResult<Map> {
    let o = command_opts(ctx, host, "runner::run", opts)?;
    if host.dry_run {
        println!("dry-run: in the runner: {command}");
        return to_map(ctx, &Ran::default());
    }
    let runner = host.runner().map_err(|e| script_err(ctx, e))?;
    let result = host.block_on(runner.run(command, o.input.clone(), o.timeout));
    finish(ctx, "runner::run", &o, result)
}

/// `runner::kubectl(args, opts) -> #{ code, stdout, stderr }`
fn kubectl(ctx: &NativeCallContext<'_>, host: &Host, args: Array, opts: &Map) -> ScriptResult<Map> {
    let o = command_opts(ctx, host, "runner::kubectl", opts)?;
    let args = string_array(ctx, "runner::kubectl", "arguments", args)?;
    if host.dry_run {
        println!(
            "dry-run: in the runner: {}",
            flyte_runner_proxy::remote::kubectl_script(&args).map_err(|e| script_err(ctx, e))?
        );
        return to_map(ctx, &Ran::default());
    }
    let runner = host.runner().map_err(|e| script_err(ctx, e))?;
    let result = host.block_on(runner.kubectl(&args, o.input.clone(), o.timeout));
    finish(ctx, "runner::kubectl", &o, result)
}

/// `runner::curl(url, opts) -> #{ status, body }`; opts: method, headers (map), data, timeout,
/// insecure.
fn curl(ctx: &NativeCallContext<'_>, host: &Host, url: &str, opts: &Map) -> ScriptResult<Map> {
    const FUNC: &str = "runner::curl";
    let o: CurlOptions = options(ctx, FUNC, opts)?;
    let mut request = CurlRequest::get(url);
    if let Some(method) = o.method {
        request.method = method;
    }
    if let Some(headers) = o.headers {
        request.headers = headers
            .into_iter()
            .map(|(name, value)| (name, value.0))
            .collect();
    }
    request.data = o.data;
    request.timeout_secs = host
        .bound(seconds(ctx, FUNC, "timeout", o.timeout)?.unwrap_or(Duration::from_secs(10)))
        .as_secs()
        .max(1);
    request.insecure = o.insecure.unwrap_or(false);
    if host.dry_run {
        println!(
            "dry-run: in the runner: curl {} {}",
            request.method,
            flyte_runner_proxy::remote::redact_url(url)
        );
        return to_map(ctx, &Response::default());
    }
    let runner = host.runner().map_err(|e| script_err(ctx, e))?;
    let response = host.block_on(runner.curl(&request)).map_err(|e| {
        // The URL's query or user info may hold a token.
        let shown = flyte_runner_proxy::remote::redact_url(url);
        script_err(ctx, format!("runner::curl {shown}: {e}"))
    })?;
    to_map(
        ctx,
        &Response {
            status: i64::from(response.status),
            body: response.body,
        },
    )
}

/// `runner::port_forward(namespace, pod, local_port, remote_port, |port| { ... })`: the
/// closure's value; the forward is stopped however the closure ends.
fn port_forward(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    target: (&str, &str),
    ports: (rhai::INT, rhai::INT),
    body: &FnPtr,
) -> ScriptResult<Dynamic> {
    let (namespace, pod) = target;
    let port = |value: rhai::INT, what: &str| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                script_err(
                    ctx,
                    format!("runner::port_forward: {what} {value} is not a port (1 to 65535)"),
                )
            })
    };
    let (local, remote) = (port(ports.0, "local port")?, port(ports.1, "remote port")?);
    if host.dry_run {
        println!(
            "dry-run: in the runner: kubectl -n {namespace} port-forward {pod} {local}:{remote} (stopped after the block)"
        );
        return body.call_within_context(ctx, (rhai::INT::from(local),));
    }
    let runner = host.runner().map_err(|e| script_err(ctx, e))?;
    let forward = host
        .block_on(runner.port_forward(namespace, pod, local, remote))
        .map_err(|e| script_err(ctx, format!("runner::port_forward: {e}")))?;
    let result: ScriptResult<Dynamic> =
        body.call_within_context(ctx, (rhai::INT::from(forward.port()),));
    // Stopped whether the block returned or threw; a failure to stop is reported unless the
    // block's own error is the better story.
    let closed = host.block_on(forward.close());
    match (result, closed) {
        (Ok(value), Ok(())) => Ok(value),
        (Ok(_), Err(e)) => Err(script_err(
            ctx,
            format!("runner::port_forward: cannot stop kubectl port-forward: {e}"),
        )),
        (Err(e), _) => Err(e),
    }
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let h = Arc::clone(host);
    with_options!(
        &mut module,
        "runner",
        "run",
        (command: &str => "command: String") -> "Map",
        "Run a shell command line in the runner VM (ssh -> incus exec -> bash -lc);\nreturns #{ code, stdout, stderr }. opts: timeout (seconds), input, check (fail on non-zero).",
        move |ctx: &NativeCallContext<'_>, command: &str, opts: &Map| run(ctx, &h, command, opts),
    );
    let h = Arc::clone(host);
    with_options!(
        &mut module,
        "runner",
        "kubectl",
        (args: Array => "args: Array") -> "Map",
        "Run kubectl with `args` in the runner VM; returns #{ code, stdout, stderr }.\nopts: timeout, input, check.",
        move |ctx: &NativeCallContext<'_>, args: Array, opts: &Map| kubectl(ctx, &h, args, opts),
    );
    let h = Arc::clone(host);
    with_options!(
        &mut module,
        "runner",
        "curl",
        (url: &str => "url: String") -> "Map",
        "Request `url` with curl from the runner VM (nothing secret in any argv); returns\n#{ status, body }. opts: method, headers (map), data, timeout, insecure.",
        move |ctx: &NativeCallContext<'_>, url: &str, opts: &Map| curl(ctx, &h, url, opts),
    );
    let h = Arc::clone(host);
    documented("port_forward", &["namespace: String", "pod: String", "local_port: int", "remote_port: int", "body: Fn", "?"], "Forward `local_port` to the pod's `remote_port` through the runner VM while `body` runs\n(it gets the local port); the forward ends however `body` ends. Returns `body`'s value.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>,
              namespace: &str,
              pod: &str,
              local: rhai::INT,
              remote: rhai::INT,
              body: FnPtr| {
            port_forward(&ctx, &h, (namespace, pod), (local, remote), &body)
        },
    );
    module
}
