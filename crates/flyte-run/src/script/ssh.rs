//! `ssh::` — render, install and remove debug Host blocks (flyte-ssh-config).

use std::path::PathBuf;
use std::sync::Arc;

use flyte_ssh_config::{DebugHost, EditOptions, HostKeyCheck, Outcome};
use rhai::{Dynamic, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{Opts, ScriptResult, documented, script_err, string_array};

const INFO_KEYS: &[&str] = &[
    "host_alias",
    "user",
    "identity_file",
    "wss_url",
    "headers_file",
    "host_key",
    "host_key_alias",
    "known_hosts_file",
    "proxy_program",
    // Fields of the SSHDebug map that these functions read or pass over.
    "run_name",
    "action_name",
    "ssh_config",
    "host_key_fingerprint",
];

/// The block described by an SSHDebug-shaped map, with defaults for what it leaves out.
fn debug_host(
    ctx: &NativeCallContext<'_>,
    func: &'static str,
    host: &Host,
    info: &Map,
) -> ScriptResult<(DebugHost, Option<String>)> {
    let info = Opts::new(ctx, func, info, INFO_KEYS)?;
    let required = |key: &str| -> ScriptResult<String> {
        info.string(key)?
            .ok_or_else(|| script_err(ctx, format!("{func}: the info map needs `{key}`")))
    };
    let alias = info
        .string("host_alias")?
        .unwrap_or_else(|| flyte_debug_client::DEFAULT_ALIAS.to_owned());
    let debug_dir = host.layout().debug();
    let host_key_alias = match (info.string("host_key_alias")?, info.string("run_name")?) {
        (Some(given), _) => given,
        // One name per project, domain, run and action: a new debug pod has a new host key
        // (the map `debug::connect` returns names its own; this is for maps a script builds).
        (None, Some(run)) => flyte_debug_client::host_key_alias(
            &flyte_debug_client::run_id(
                flyte_debug_client::DEFAULT_PROJECT,
                flyte_debug_client::DEFAULT_DOMAIN,
                &run,
            ),
            &info
                .string("action_name")?
                .unwrap_or_else(|| flyte_debug_client::DEFAULT_ACTION.to_owned()),
        ),
        (None, None) => format!("{alias}.flyte-debug"),
    };
    let proxy_program = match info.string("proxy_program")? {
        Some(p) => PathBuf::from(p),
        None => crate::paths::proxy_program().map_err(|e| script_err(ctx, format!("{e:#}")))?,
    };
    let host_key = info.string("host_key")?;
    let block = DebugHost {
        user: info.string("user")?.unwrap_or_else(|| "root".to_owned()),
        identity_file: info
            .string("identity_file")?
            .map_or_else(|| debug_dir.private_key(), PathBuf::from),
        proxy_program,
        wss_url: required("wss_url")?,
        headers_file: info
            .string("headers_file")?
            .map_or_else(|| debug_dir.headers(&alias), PathBuf::from),
        host_key_alias,
        known_hosts_file: info
            .string("known_hosts_file")?
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
    let opts = Opts::new(ctx, func, opts, &["config_path", "dry_run"])?;
    Ok(EditOptions {
        config_path: opts
            .string("config_path")?
            .map_or_else(|| host.layout().ssh_config(), PathBuf::from),
        dry_run: host.dry_run || opts.bool("dry_run")?.unwrap_or(false),
    })
}

/// What scripts get back from install and remove; a dry run also prints its diff.
fn outcome_map(outcome: Outcome) -> Map {
    let mut map = Map::new();
    let (path, changed, diff) = match outcome {
        Outcome::Written { path } => (path, true, None),
        Outcome::Unchanged { path } | Outcome::NotPresent { path } => (path, false, None),
        Outcome::WouldChange { path, diff } => {
            print!("{diff}");
            (path, false, Some(diff))
        }
    };
    map.insert("path".into(), Dynamic::from(path.display().to_string()));
    map.insert("changed".into(), Dynamic::from(changed));
    map.insert("diff".into(), diff.map_or(Dynamic::UNIT, Dynamic::from));
    map
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
    let install = move |ctx: NativeCallContext<'_>, info: Map, opts: Map| -> ScriptResult<Map> {
        let (block, host_key) = debug_host(&ctx, "ssh::install", &h, &info)?;
        let options = edit_options(&ctx, &h, "ssh::install", &opts)?;
        let outcome = flyte_debug_client::ssh::install(&block, host_key.as_deref(), &options)
            .map_err(|e| script_err(&ctx, e))?;
        Ok(outcome_map(outcome))
    };
    let install_no_opts = install.clone();
    documented("install", &["info: Map", "opts: Map", "Map"], "Install the Host block in the ssh config (a managed block; nothing else in the file\nchanges) and pin the host key; returns #{ path, changed, diff }.\nopts: config_path (default ~/.ssh/config), dry_run.")
        .set_into_module(&mut module, install);
    documented(
        "install",
        &["info: Map", "Map"],
        "`ssh::install(info, #{})`.",
    )
    .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, info: Map| {
        install_no_opts(ctx, info, Map::new())
    });

    let h = Arc::clone(host);
    // ssh::remove(alias, opts) -> #{ path, changed, diff }
    let remove = move |ctx: NativeCallContext<'_>, alias: &str, opts: Map| -> ScriptResult<Map> {
        let options = edit_options(&ctx, &h, "ssh::remove", &opts)?;
        flyte_ssh_config::remove(&options, alias)
            .map(outcome_map)
            .map_err(|e| script_err(&ctx, e))
    };
    let remove_no_opts = remove.clone();
    documented("remove", &["alias: String", "opts: Map", "Map"], "Remove the managed Host block of `alias`; returns #{ path, changed, diff }.\nopts: config_path, dry_run.")
        .set_into_module(&mut module, remove);
    documented(
        "remove",
        &["alias: String", "Map"],
        "`ssh::remove(alias, #{})`.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, alias: &str| remove_no_opts(ctx, alias, Map::new()),
    );

    let h = Arc::clone(host);
    // ssh::exec(alias, command, opts) -> #{ code, stdout, stderr }
    let exec = move |ctx: NativeCallContext<'_>,
                     alias: &str,
                     command: Dynamic,
                     opts: Map|
          -> ScriptResult<Map> { exec(&ctx, &h, alias, command, &opts) };
    let exec_no_opts = exec.clone();
    documented("exec", &["alias: String", "command: ?", "opts: Map", "Map"], "Run `command` (a string for the remote shell, or an array of words) on `alias` with the\nsystem OpenSSH client; returns #{ code, stdout, stderr }.\nopts: config_path, timeout (seconds), input, check.")
        .set_into_module(&mut module, exec);
    documented(
        "exec",
        &["alias: String", "command: ?", "Map"],
        "`ssh::exec(alias, command, #{})`.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, alias: &str, command: Dynamic| {
            exec_no_opts(ctx, alias, command, Map::new())
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
    let o = Opts::new(
        ctx,
        "ssh::exec",
        opts,
        &["config_path", "timeout", "input", "check"],
    )?;
    flyte_ssh_config::validate_alias(alias).map_err(|e| script_err(ctx, e))?;
    let config = o
        .string("config_path")?
        .map_or_else(|| host.layout().ssh_config(), PathBuf::from);
    let timeout = host.bound(
        o.seconds("timeout")?
            .unwrap_or(std::time::Duration::from_mins(2)),
    );
    let input = o.string("input")?;
    let check = o.bool("check")?.unwrap_or(false);
    let remote = remote_command(ctx, command)?;
    let mut map = Map::new();
    if host.dry_run {
        println!(
            "dry-run: ssh -F {} -o BatchMode=yes {alias} {}",
            shown(ctx, &config.display().to_string())?,
            shown(ctx, &remote)?
        );
        map.insert("code".into(), Dynamic::from(0_i64));
        map.insert("stdout".into(), Dynamic::from(String::new()));
        map.insert("stderr".into(), Dynamic::from(String::new()));
        return Ok(map);
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
    map.insert("code".into(), Dynamic::from(i64::from(code)));
    map.insert("stdout".into(), Dynamic::from(output.stdout));
    map.insert("stderr".into(), Dynamic::from(stderr));
    Ok(map)
}
