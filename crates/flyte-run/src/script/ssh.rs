//! `ssh::` — render, install and remove debug Host blocks (flyte-ssh-config).

use std::path::PathBuf;
use std::sync::Arc;

use flyte_ssh_config::{DebugHost, EditOptions, HostKeyCheck, Outcome};
use rhai::{Dynamic, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};

use super::Host;
use super::opts::{
    ScriptResult, documented, options, script_err, seconds, string_array, to_map, with_options,
};

/// The info map `ssh::render` and `ssh::install` take: an `SSHDebug` map from `debug::connect`, or
/// one a script builds.
#[derive(Deserialize)]
struct DebugHostInfo {
    host_alias: Option<String>,
    user: Option<String>,
    identity_file: Option<String>,
    wss_url: Option<String>,
    headers_file: Option<String>,
    host_key: Option<String>,
    host_key_alias: Option<String>,
    known_hosts_file: Option<String>,
    proxy_program: Option<String>,
    tunnel_args: Option<Vec<String>>,
    // Fields of the SSHDebug map that these functions read or pass over.
    run_name: Option<String>,
    action_name: Option<String>,
    #[allow(
        dead_code,
        reason = "accepted so an SSHDebug map can be passed as it is"
    )]
    ssh_config: Option<String>,
    #[allow(
        dead_code,
        reason = "accepted so an SSHDebug map can be passed as it is"
    )]
    host_key_fingerprint: Option<String>,
}

/// What `ssh::install` and `ssh::remove` take.
#[derive(Deserialize)]
struct EditOpts {
    config_path: Option<String>,
    dry_run: Option<bool>,
}

/// What `ssh::exec` takes.
#[derive(Deserialize)]
struct ExecOpts {
    config_path: Option<String>,
    timeout: Option<rhai::INT>,
    input: Option<String>,
    check: Option<bool>,
}

/// What `ssh::install` and `ssh::remove` return; a dry run also prints its diff.
#[derive(Serialize)]
struct Edited {
    path: String,
    changed: bool,
    diff: Option<String>,
}

/// What `ssh::exec` returns (and `runner::run`, `runner::kubectl`).
#[derive(Serialize, Default)]
pub(super) struct Ran {
    pub(super) code: i64,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// The block described by an SSHDebug-shaped map, with defaults for what it leaves out.
fn debug_host(
    ctx: &NativeCallContext<'_>,
    func: &'static str,
    host: &Host,
    info: &Map,
) -> ScriptResult<(DebugHost, Option<String>)> {
    let info: DebugHostInfo = options(ctx, func, info)?;
    let wss_url = info
        .wss_url
        .ok_or_else(|| script_err(ctx, format!("{func}: the info map needs `wss_url`")))?;
    let alias = info
        .host_alias
        .unwrap_or_else(|| flyte_debug_client::DEFAULT_ALIAS.to_owned());
    let debug_dir = host.layout().debug();
    let host_key_alias = match (info.host_key_alias, info.run_name) {
        (Some(given), _) => given,
        // One name per project, domain, run and action: a new debug pod has a new host key
        // (the map `debug::connect` returns names its own; this is for maps a script builds).
        (None, Some(run)) => flyte_debug_client::host_key_alias(
            &flyte_debug_client::RunScope::default().run_id(&run),
            info.action_name
                .as_deref()
                .unwrap_or(flyte_debug_client::DEFAULT_ACTION),
        ),
        (None, None) => format!("{alias}.flyte-debug"),
    };
    let proxy_program = match info.proxy_program {
        Some(p) => PathBuf::from(p),
        None => crate::paths::proxy_program().map_err(|e| script_err(ctx, format!("{e:#}")))?,
    };
    let host_key = info.host_key;
    let block = DebugHost {
        user: info.user.unwrap_or_else(|| "root".to_owned()),
        identity_file: info
            .identity_file
            .map_or_else(|| debug_dir.private_key(), PathBuf::from),
        proxy_program,
        wss_url,
        tunnel_args: info.tunnel_args.unwrap_or_default(),
        headers_file: info
            .headers_file
            .map_or_else(|| debug_dir.headers(&alias), PathBuf::from),
        host_key_alias,
        known_hosts_file: info
            .known_hosts_file
            .map_or_else(|| debug_dir.known_hosts(), PathBuf::from),
        host_key_check: if host_key.is_some() {
            HostKeyCheck::Pinned
        } else {
            HostKeyCheck::LearnOnFirstUse
        },
        alias,
    };
    Ok((block, host_key))
}

fn edit_options(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    func: &'static str,
    opts: &Map,
) -> ScriptResult<EditOptions> {
    let opts: EditOpts = options(ctx, func, opts)?;
    Ok(EditOptions {
        config_path: opts
            .config_path
            .map_or_else(|| host.layout().ssh_config(), PathBuf::from),
        dry_run: host.dry_run || opts.dry_run.unwrap_or(false),
    })
}

/// What scripts get back from install and remove; a dry run also prints its diff.
fn edited(outcome: Outcome) -> Edited {
    let (path, changed, diff) = match outcome {
        Outcome::Written { path } => (path, true, None),
        Outcome::Unchanged { path } | Outcome::NotPresent { path } => (path, false, None),
        Outcome::WouldChange { path, diff } => {
            print!("{diff}");
            (path, false, Some(diff))
        }
    };
    Edited {
        path: path.display().to_string(),
        changed,
        diff,
    }
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();

    let h = Arc::clone(host);
    // ssh::render(info) -> the Host block as text
    documented(
        "render",
        &["info: Map", "String"],
        "The debug Host block an SSHDebug map describes, as ssh_config text.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, info: Map| -> ScriptResult<String> {
            let (block, _) = debug_host(&ctx, "ssh::render", &h, &info)?;
            block.render().map_err(|e| script_err(&ctx, e))
        },
    );

    let h = Arc::clone(host);
    // ssh::install(info, opts) -> #{ path, changed, diff }
    with_options!(
        &mut module,
        "ssh",
        "install",
        (info: Map => "info: Map") -> "Map",
        "Install the Host block in the ssh config (a managed block; nothing else in the file\nchanges) and pin the host key; returns #{ path, changed, diff }.\nopts: config_path (default ~/.ssh/config), dry_run.",
        move |ctx: &NativeCallContext<'_>, info: Map, opts: &Map| -> ScriptResult<Map> {
            let (block, host_key) = debug_host(ctx, "ssh::install", &h, &info)?;
            let options = edit_options(ctx, &h, "ssh::install", opts)?;
            let outcome = flyte_debug_client::ssh::install(&block, host_key.as_deref(), &options)
                .map_err(|e| script_err(ctx, e))?;
            to_map(ctx, &edited(outcome))
        },
    );

    let h = Arc::clone(host);
    // ssh::remove(alias, opts) -> #{ path, changed, diff }
    with_options!(
        &mut module,
        "ssh",
        "remove",
        (alias: &str => "alias: String") -> "Map",
        "Remove the managed Host block of `alias`; returns #{ path, changed, diff }.\nopts: config_path, dry_run.",
        move |ctx: &NativeCallContext<'_>, alias: &str, opts: &Map| -> ScriptResult<Map> {
            let options = edit_options(ctx, &h, "ssh::remove", opts)?;
            let outcome = flyte_ssh_config::remove(&options, alias).map_err(|e| script_err(ctx, e))?;
            to_map(ctx, &edited(outcome))
        },
    );

    let h = Arc::clone(host);
    // ssh::exec(alias, command, opts) -> #{ code, stdout, stderr }
    with_options!(
        &mut module,
        "ssh",
        "exec",
        (alias: &str => "alias: String", command: Dynamic => "command: ?") -> "Map",
        "Run `command` (a string for the remote shell, or an array of words) on `alias` with the\nsystem OpenSSH client; returns #{ code, stdout, stderr }.\nopts: config_path, timeout (seconds), input, check.",
        move |ctx: &NativeCallContext<'_>, alias: &str, command: Dynamic, opts: &Map| {
            exec(ctx, &h, alias, command, opts)
        },
    );
    module
}

/// `word` as a shell word, for the dry-run line.
fn shown(ctx: &NativeCallContext<'_>, word: &str) -> ScriptResult<String> {
    shlex::try_quote(word)
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| script_err(ctx, format!("ssh::exec: {word:?} holds a NUL byte")))
}

/// The remote command: a string as it is (the remote shell parses it), an array word by word.
fn remote_command(ctx: &NativeCallContext<'_>, command: Dynamic) -> ScriptResult<String> {
    if command.is_string() {
        return Ok(command.to_string());
    }
    let words = command.into_array().map_err(|t| {
        script_err(
            ctx,
            format!("ssh::exec: the command must be a string or an array of strings, not {t}"),
        )
    })?;
    let words = string_array(ctx, "ssh::exec", "command words", words)?;
    flyte_debug_client::ssh::join_words(words.iter().map(String::as_str))
        .map_err(|e| script_err(ctx, format!("ssh::exec: {e}")))
}

/// Run `command` on `alias` with the system OpenSSH client, reading the config file we manage
/// (given with `-F`, since ssh finds `~/.ssh` through the passwd entry, not `$HOME`). `BatchMode`:
/// a playbook never stops at a password or host-key prompt.
fn exec(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    alias: &str,
    command: Dynamic,
    opts: &Map,
) -> ScriptResult<Map> {
    const FUNC: &str = "ssh::exec";
    let o: ExecOpts = options(ctx, FUNC, opts)?;
    flyte_ssh_config::validate_alias(alias).map_err(|e| script_err(ctx, e))?;
    let config = o
        .config_path
        .map_or_else(|| host.layout().ssh_config(), PathBuf::from);
    let timeout = host.bound(
        seconds(ctx, FUNC, "timeout", o.timeout)?.unwrap_or(std::time::Duration::from_mins(2)),
    );
    let (input, check) = (o.input, o.check.unwrap_or(false));
    let remote = remote_command(ctx, command)?;
    if host.dry_run {
        println!(
            "dry-run: ssh -F {} -o BatchMode=yes {alias} {}",
            shown(ctx, &config.display().to_string())?,
            shown(ctx, &remote)?
        );
        return to_map(ctx, &Ran::default());
    }
    let output = host
        .block_on(flyte_debug_client::ssh::exec(
            &config, alias, &remote, input, timeout,
        ))
        .map_err(|e| script_err(ctx, e))?;
    let (code, stderr) = (output.code, output.stderr);
    if check && code != 0 {
        return Err(script_err(
            ctx,
            // Not the command itself: it may carry a secret the playbook passed.
            format!(
                "ssh {alias}: the remote command exited with {code}: {}",
                stderr.trim_end()
            ),
        ));
    }
    to_map(
        ctx,
        &Ran {
            code: i64::from(code),
            stdout: output.stdout,
            stderr,
        },
    )
}
