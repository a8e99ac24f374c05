//! `runner::` — commands, kubectl, curl and port-forwards inside the runner VM
//! (flyte-runner-proxy).

use std::sync::Arc;
use std::time::Duration;

use flyte_runner_proxy::{CurlRequest, Output};
use rhai::{Array, Dynamic, FnPtr, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{Opts, ScriptResult, documented, script_err, string_array};

const DEFAULT_TIMEOUT: Duration = Duration::from_mins(2);

fn output_map(output: Output) -> Map {
    let mut map = Map::new();
    map.insert("code".into(), Dynamic::from(i64::from(output.code)));
    map.insert("stdout".into(), output.stdout.into());
    map.insert("stderr".into(), output.stderr.into());
    map
}

/// The options `runner::run` and `runner::kubectl` share: `timeout`, `input`, `check`.
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
    let o = Opts::new(ctx, func, opts, &["timeout", "input", "check"])?;
    Ok(CommandOpts {
        timeout: host.bound(o.seconds("timeout")?.unwrap_or(DEFAULT_TIMEOUT)),
        input: o.string("input")?.map(String::into_bytes),
        check: o.bool("check")?.unwrap_or(false),
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
    Ok(output_map(output))
}

fn dry_run_output() -> Map {
    output_map(Output {
        code: 0,
        stdout: String::new(),
        stderr: String::new(),
    })
}

/// `runner::run(command, opts) -> #{ code, stdout, stderr }`
fn run(ctx: &NativeCallContext<'_>, host: &Host, command: &str, opts: &Map) -> ScriptResult<Map> {
    let o = command_opts(ctx, host, "runner::run", opts)?;
    if host.dry_run {
        println!("dry-run: in the runner: {command}");
        return Ok(dry_run_output());
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
        return Ok(dry_run_output());
    }
    let runner = host.runner().map_err(|e| script_err(ctx, e))?;
    let result = host.block_on(runner.kubectl(&args, o.input.clone(), o.timeout));
    finish(ctx, "runner::kubectl", &o, result)
}

/// `runner::curl(url, opts) -> #{ status, body }`; opts: method, headers (map), data, timeout,
/// insecure.
fn curl(ctx: &NativeCallContext<'_>, host: &Host, url: &str, opts: &Map) -> ScriptResult<Map> {
    let o = Opts::new(
        ctx,
        "runner::curl",
        opts,
        &["method", "headers", "data", "timeout", "insecure"],
    )?;
    let mut request = CurlRequest::get(url);
    if let Some(method) = o.string("method")? {
        request.method = method;
    }
    if let Some(headers) = opts.get("headers").filter(|v| !v.is_unit()) {
        let headers = headers
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| script_err(ctx, "runner::curl: `headers` must be a map"))?;
        request.headers = headers
            .into_iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
    }
    request.data = o.string("data")?;
    request.timeout_secs = host
        .bound(o.seconds("timeout")?.unwrap_or(Duration::from_secs(10)))
        .as_secs()
        .max(1);
    request.insecure = o.bool("insecure")?.unwrap_or(false);
    let mut map = Map::new();
    if host.dry_run {
        println!(
            "dry-run: in the runner: curl {} {}",
            request.method,
            flyte_runner_proxy::remote::redact_url(url)
        );
        map.insert("status".into(), Dynamic::from(0_i64));
        map.insert("body".into(), Dynamic::from(String::new()));
        return Ok(map);
    }
    let runner = host.runner().map_err(|e| script_err(ctx, e))?;
    let response = host.block_on(runner.curl(&request)).map_err(|e| {
        // The URL's query or user info may hold a token.
        let shown = flyte_runner_proxy::remote::redact_url(url);
        script_err(ctx, format!("runner::curl {shown}: {e}"))
    })?;
    map.insert("status".into(), Dynamic::from(i64::from(response.status)));
    map.insert("body".into(), response.body.into());
    Ok(map)
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
    documented("run", &["command: String", "opts: Map", "Map"], "Run a shell command line in the runner VM (ssh -> incus exec -> bash -lc);\nreturns #{ code, stdout, stderr }. opts: timeout (seconds), input, check (fail on non-zero).")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, command: &str, opts: Map| run(&ctx, &h, command, &opts),
    );
    let h = Arc::clone(host);
    documented(
        "run",
        &["command: String", "Map"],
        "`runner::run(command, #{})`.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, command: &str| run(&ctx, &h, command, &Map::new()),
    );
    let h = Arc::clone(host);
    documented("kubectl", &["args: Array", "opts: Map", "Map"], "Run kubectl with `args` in the runner VM; returns #{ code, stdout, stderr }.\nopts: timeout, input, check.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, args: Array, opts: Map| kubectl(&ctx, &h, args, &opts),
    );
    let h = Arc::clone(host);
    documented(
        "kubectl",
        &["args: Array", "Map"],
        "`runner::kubectl(args, #{})`.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, args: Array| kubectl(&ctx, &h, args, &Map::new()),
    );
    let h = Arc::clone(host);
    documented("curl", &["url: String", "opts: Map", "Map"], "Request `url` with curl from the runner VM (nothing secret in any argv); returns\n#{ status, body }. opts: method, headers (map), data, timeout, insecure.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, url: &str, opts: Map| curl(&ctx, &h, url, &opts),
    );
    let h = Arc::clone(host);
    documented("curl", &["url: String", "Map"], "`runner::curl(url, #{})`.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, url: &str| {
            curl(&ctx, &h, url, &Map::new())
        });
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
