//! `flyte-run debug RUN [ACTION]`: relaunch RUN's task in debug mode under a derived name (or
//! reuse that run when it exists) and connect to it, as `flyte debug` does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use flyte_api::Code;
use flyte_api::types::{
    CreateRunRequest, CreateRunResponse, Envs, KeyValuePair, RunIdentifier, RunSpec,
    services::RUN_SERVICE,
};
use flyte_ssh_config::{EditOptions, Outcome};

use crate::debug::{self, ConnectOptions};
use crate::script::Host;
use crate::script::control_plane::{self, WhenNone};

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
    /// Give up waiting for the run and its route after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
    /// Seconds between looks at the run.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    poll_interval: u64,
    /// Do not wait for the route to answer before writing the config.
    #[arg(long)]
    no_wait_for_route: bool,
    /// Install the Host block in the ssh config (a managed block; nothing else is touched).
    /// Without it the block is printed.
    #[arg(long)]
    write_config: bool,
    /// The ssh config file to write with --write-config.
    #[arg(long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// With --write-config: show the change as a diff and write nothing.
    #[arg(long)]
    dry_run: bool,
}

fn run_id(args: &DebugArgs, name: &str) -> RunIdentifier {
    RunIdentifier {
        org: String::new(),
        project: args.project.clone(),
        domain: args.domain.clone(),
        name: name.to_owned(),
    }
}

/// Launch RUN's task again with SSH debug on, as `name`. `false` when `name` already exists (a
/// concurrent `flyte-run debug` won the race): connect to that one.
fn relaunch(
    host: &Host,
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
    let task = original.task.with_context(|| {
        format!(
            "the control plane did not return the task of run {:?}, so it cannot be relaunched; launch it in debug mode from a playbook (debug::launch_env)",
            args.run
        )
    })?;
    let pair = flyte_keys::ensure_keypair(&flyte_keys::default_dir(&host.home))?;
    let env = debug::launch_env(&pair.public_key, [])
        .into_iter()
        .map(|(key, value)| KeyValuePair { key, value })
        .collect();
    let request = CreateRunRequest {
        run_id: Some(run_id(args, name)),
        task_spec: Some(task),
        run_spec: Some(RunSpec {
            envs: Some(Envs { values: env }),
            ..RunSpec::default()
        }),
        ..CreateRunRequest::default()
    };
    match host.block_on(client.unary::<_, CreateRunResponse>(RUN_SERVICE, "CreateRun", &request)) {
        Ok(_) => Ok(true),
        Err(e) if e.code == Code::AlreadyExists => Ok(false),
        Err(e) => Err(anyhow!("cannot launch the debug run {name:?}: {e}")),
    }
}

pub(crate) fn run(args: &DebugArgs) -> anyhow::Result<ExitCode> {
    let host = Arc::new(Host {
        home: crate::paths::home_dir()?,
        args: rhai::Map::new(),
        endpoint: args.endpoint.clone(),
        dry_run: false,
        timeout: None,
        runtime: std::sync::OnceLock::new(),
    });
    let name = debug::debug_run_name(&args.run).map_err(|e| anyhow!(e))?;
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
        dry_run: args.dry_run,
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
    if args.dry_run {
        eprintln!("--dry-run: nothing was written");
        return Ok(ExitCode::SUCCESS);
    }
    println!("ssh {}", args.host_alias);
    Ok(ExitCode::SUCCESS)
}
