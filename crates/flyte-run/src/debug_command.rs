//! `flyte-run debug RUN [ACTION]`: relaunch RUN's task in debug mode under a derived name (or
//! reuse that run when it exists) and connect to it, as `flyte debug` does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use buffa::MessageField;
use flyte_api::idl::flyteidl2::common::RunIdentifier;
use flyte_api::idl::flyteidl2::core::KeyValuePair;
use flyte_api::idl::flyteidl2::task::{Envs, RunSpec};
use flyte_api::idl::flyteidl2::workflow::{
    self, CreateRunRequest, GetRunDetailsRequest, action_details,
};
use flyte_api::{ActionPhaseExt, Answer, Code};
use flyte_ssh_config::{EditOptions, Outcome};

use crate::context::AppContext;
use crate::control_plane::{self, WhenNone};
use crate::debug::{self, ConnectOptions};

// Each bool is one independent command-line flag.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, clap::Args)]
pub(crate) struct DebugArgs {
    /// The run to debug. Its task is launched again as `<RUN>-dbg` (lower-cased, other
    /// characters as `-`, a leading `u` dropped) with SSH debug on; if that run exists and still
    /// runs, flyte-run connects to it instead.
    run: String,
    /// The action of RUN whose task is relaunched.
    #[arg(default_value = debug::DEFAULT_ACTION)]
    action: String,
    #[arg(long, default_value = debug::DEFAULT_PROJECT)]
    project: String,
    #[arg(long, default_value = debug::DEFAULT_DOMAIN)]
    domain: String,
    /// The control-plane endpoint (default: `FLYTE_ENDPOINT`, else the local sandbox).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// The ssh Host alias to write.
    #[arg(long, default_value = debug::DEFAULT_ALIAS)]
    host_alias: String,
    /// The login user inside the task.
    #[arg(long, default_value = "root")]
    user: String,
    /// Mint the route's token from the stored API key (`~/.flyte/ssh-debug/api-key`).
    #[arg(long)]
    use_api_key: bool,
    /// Mint a new token even if a cached one is still valid.
    #[arg(long)]
    refresh_token: bool,
    /// The debug run's name, instead of the one derived from RUN (e.g. when that one has
    /// ended: run names stay taken).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Give up waiting for the run and its route after this many seconds (at most a week).
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=604_800))]
    timeout: u64,
    /// Seconds between looks at the run.
    #[arg(long, value_name = "SECONDS", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    poll_interval: u64,
    /// Do not wait for the route to answer before writing the config.
    #[arg(long)]
    no_wait_for_route: bool,
    /// Install the Host block in the ssh config (a managed block; nothing else is touched).
    /// Without it the block is printed.
    #[arg(long)]
    write_config: bool,
    /// Then open a shell in the task right away: the system ssh, in this terminal, with the
    /// block (written to ~/.flyte/ssh-debug/<alias>.ssh_config, 0600) and the host key pinned.
    #[arg(long)]
    shell: bool,
    /// The ssh config file to write with --write-config.
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// Say what would be done (relaunch or reconnect, which run) and do none of it: no run is
    /// launched, no token fetched, no file written.
    #[arg(long)]
    dry_run: bool,
}

fn run_id(args: &DebugArgs, name: &str) -> RunIdentifier {
    flyte_api::request::run_id(&args.project, &args.domain, name)
}

/// Launch RUN's task again with SSH debug on, as `name`. `false` when `name` already exists (a
/// concurrent `flyte-run debug` won the race): connect to that one.
fn relaunch(
    host: &AppContext,
    client: &flyte_api::Client,
    args: &DebugArgs,
    name: &str,
) -> anyhow::Result<bool> {
    let original = host
        .block_on(debug::action_details(
            client,
            &run_id(args, &args.run),
            &args.action,
        ))
        .map_err(|e| anyhow!(e))?
        .with_context(|| {
            format!(
                "no action {:?} in run {:?} ({}/{}); check the run name, --project and --domain",
                args.action, args.run, args.project, args.domain
            )
        })?;
    let task = match original.spec {
        Some(action_details::Spec::Task(task)) => Some(*task),
        _ => None,
    };
    let task = task.with_context(|| {
        format!(
            "the control plane did not return the task of run {:?}, so it cannot be relaunched; launch it in debug mode from a playbook (debug::launch_env)",
            args.run
        )
    })?;
    // The original run's settings (environment, labels) carry over; the debug variables win.
    let runs = client.connect(workflow::RunServiceClient::new)?;
    let original_spec = host
        .block_on(runs.get_run_details(GetRunDetailsRequest {
            run_id: MessageField::some(run_id(args, &args.run)),
            ..Default::default()
        }))
        .owned()
        .map_err(|e| anyhow!("run {:?}: {e}", args.run))?
        .details
        .into_option()
        .and_then(|d| d.run_spec.into_option())
        .unwrap_or_default();
    let original_env = original_spec
        .envs
        .as_option()
        .into_iter()
        .flat_map(|e| &e.values)
        .map(|kv| (kv.key.clone(), kv.value.clone()));
    let pair = flyte_keys::ensure_keypair(&flyte_keys::default_dir(&host.home))?;
    // launch_env puts its three variables first and lets `extra` override; here the debug
    // variables must win, so they are applied last.
    let mut env: Vec<(String, String)> = original_env.collect();
    for (key, value) in debug::launch_env(&pair.public_key, []) {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    let request = CreateRunRequest {
        id: Some(run_id(args, name).into()),
        task: Some(task.into()),
        run_spec: MessageField::some(RunSpec {
            envs: MessageField::some(Envs {
                values: env
                    .into_iter()
                    .map(|(key, value)| KeyValuePair {
                        key,
                        value,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..original_spec
        }),
        ..CreateRunRequest::default()
    };
    match host.block_on(runs.create_run(request)).owned() {
        Ok(_) => Ok(true),
        Err(e) if e.code == Code::AlreadyExists => Ok(false),
        Err(e) => Err(anyhow!("cannot launch the debug run {name:?}: {e}")),
    }
}

pub(crate) fn run(args: &DebugArgs) -> anyhow::Result<ExitCode> {
    let host = AppContext::new(crate::paths::home_dir()?, args.endpoint.clone());
    // Refuse a bad alias before anything is launched.
    flyte_ssh_config::validate_alias(&args.host_alias)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => debug::debug_run_name(&args.run).map_err(|e| anyhow!(e))?,
    };
    let endpoint = control_plane::endpoint(&host, WhenNone::Fail).map_err(|e| anyhow!(e))?;
    let client = host
        .block_on(control_plane::client_for(&host, &endpoint))
        .map_err(|e| anyhow!(e))?;
    let existing = host
        .block_on(debug::action_details(
            &client,
            &run_id(args, &name),
            debug::DEFAULT_ACTION,
        ))
        .map_err(|e| anyhow!(e))?;
    if let Some(details) = &existing
        && details.status.phase.is_terminal()
    {
        bail!(
            "the debug run {name} has already ended ({}), and run names stay taken; relaunch under another name with --name NAME",
            details.status.phase.short_name()
        );
    }
    if args.dry_run {
        match &existing {
            Some(details) => println!(
                "dry-run: would reconnect to the debug run {name} ({})",
                details.status.phase.short_name()
            ),
            None => println!(
                "dry-run: would relaunch the task of {}/{} as {name} with SSH debug on, then connect",
                args.run, args.action
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match existing {
        Some(details) => eprintln!(
            "reconnecting to the debug run {name} ({})",
            details.status.phase.short_name()
        ),
        None if relaunch(&host, &client, args, &name)? => {
            eprintln!("launched {name}: run {} again with SSH debug on", args.run);
        }
        None => eprintln!("reconnecting to the debug run {name} (launched meanwhile)"),
    }
    let options = ConnectOptions {
        project: args.project.clone(),
        domain: args.domain.clone(),
        user: args.user.clone(),
        host_alias: args.host_alias.clone(),
        use_api_key: args.use_api_key,
        refresh_token: args.refresh_token,
        timeout: Duration::from_secs(args.timeout),
        poll_interval: Duration::from_secs(args.poll_interval).max(Duration::from_millis(50)),
        wait_for_route: !args.no_wait_for_route,
        ..ConnectOptions::default()
    };
    let connection = debug::connect(&host, &name, &options).map_err(|e| anyhow!(e))?;
    if let Some(fingerprint) = &connection.host_key_fingerprint {
        eprintln!("host key {fingerprint} (pinned)");
    }
    if args.shell {
        return open_shell(&host, args, &connection);
    }
    if !args.write_config {
        print!("{}", connection.ssh_config().map_err(|e| anyhow!(e))?);
        eprintln!(
            "add this block to your ssh config, or run again with --write-config; then: ssh {}",
            args.host_alias
        );
        return Ok(ExitCode::SUCCESS);
    }
    let edit = EditOptions {
        config_path: args
            .ssh_config
            .clone()
            .unwrap_or_else(|| host.home.join(".ssh").join("config")),
        dry_run: false,
    };
    let outcome = debug::install(&connection.block, connection.host_key.as_deref(), &edit)
        .map_err(|e| anyhow!(e))?;
    match outcome {
        Outcome::WouldChange { diff, .. } => print!("{diff}"),
        Outcome::Written { path } => {
            eprintln!("wrote Host {} to {}", args.host_alias, path.display());
        }
        Outcome::Unchanged { path } | Outcome::NotPresent { path } => {
            eprintln!(
                "Host {} in {} is up to date",
                args.host_alias,
                path.display()
            );
        }
    }
    println!("ssh {}", args.host_alias);
    Ok(ExitCode::SUCCESS)
}

/// Replace this process with `ssh -F <block file> <alias>`: the user's shell in the task. The
/// block goes to its own file (nothing in ~/.ssh is needed or touched unless --write-config
/// also asked for it), and the host key is pinned in our known_hosts first.
fn open_shell(
    host: &AppContext,
    args: &DebugArgs,
    connection: &debug::Connection,
) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt as _;
    let edit = EditOptions {
        config_path: args
            .ssh_config
            .clone()
            .unwrap_or_else(|| host.home.join(".ssh").join("config")),
        dry_run: false,
    };
    if args.write_config {
        debug::install(&connection.block, connection.host_key.as_deref(), &edit)
            .map_err(|e| anyhow!(e))?;
    }
    let block_file =
        flyte_auth::default_headers_file(&flyte_keys::default_dir(&host.home), &args.host_alias)
            .with_extension("ssh_config");
    let text = connection.ssh_config().map_err(|e| anyhow!(e))?;
    flyte_fs::replace(&block_file, text.as_bytes(), 0o600)
        .with_context(|| format!("cannot write {}", block_file.display()))?;
    debug::pin_host_key(&connection.block, connection.host_key.as_deref())
        .map_err(|e| anyhow!(e))?;
    eprintln!(
        "connecting: ssh -F {} {}",
        block_file.display(),
        args.host_alias
    );
    // exec only returns when it could not start ssh.
    let error = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&block_file)
        .arg(&args.host_alias)
        .exec();
    Err(anyhow!(
        "cannot run the ssh client (is OpenSSH installed? apt-get install openssh-client): {error}"
    ))
}
