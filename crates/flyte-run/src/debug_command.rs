//! `flyte-run debug RUN [ACTION]`: relaunch RUN's task in debug mode under a derived name (or
//! reuse that run when it exists) and connect to it, as `flyte debug` does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;
use flyte_debug_client::runs;
use flyte_debug_client::{
    self as debug, ConnectOptions, DebugClientError, EditOptions, Outcome, RunScope,
};

use crate::context::AppContext;
use crate::control_plane::{self, WhenNone};
use crate::progress::Spinner;

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
    /// The project (default: Flyte's `task.project`, else `flytesnacks`).
    #[arg(long)]
    project: Option<String>,
    /// The domain (default: Flyte's `task.domain`, else `development`).
    #[arg(long)]
    domain: Option<String>,
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
    /// The debug run's name, instead of the one derived from RUN. As with the derived one, a
    /// live run of that name is reused, and an ended one (run names stay taken) is passed over to
    /// NAME-2, NAME-3 ...
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

/// The org, project and domain the command line or Flyte's configuration names.
fn run_scope(args: &DebugArgs, host: &AppContext) -> RunScope {
    let defaults = host.run_defaults();
    RunScope {
        project: args.project.clone().unwrap_or(defaults.project),
        domain: args.domain.clone().unwrap_or(defaults.domain),
        ..defaults
    }
}

pub(crate) fn run(args: &DebugArgs) -> anyhow::Result<ExitCode> {
    let host = AppContext::new(crate::paths::home_dir()?, args.endpoint.clone());
    // Refuse a bad alias before anything is launched.
    flyte_ssh_config::validate_alias(&args.host_alias)?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => debug::debug_run_name(&args.run)?,
    };
    let plane = control_plane::connect(&host, WhenNone::Fail).map_err(|e| anyhow!(e))?;
    let scope = run_scope(args, &host);
    if args.dry_run {
        let choice = host.block_on(runs::choose_debug_run(&plane, &scope, &name))?;
        say_ended(&choice.ended);
        match &choice.live_phase {
            Some(phase) => println!(
                "dry-run: would reconnect to the debug run {} ({phase})",
                choice.name
            ),
            None => println!(
                "dry-run: would relaunch the task of {}/{} as {} with SSH debug on, then connect",
                args.run, args.action, choice.name
            ),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let name = launch_or_reuse(&host, &plane, &scope, args, &name)?;
    let options = ConnectOptions {
        scope,
        user: args.user.clone(),
        host_alias: args.host_alias.clone(),
        use_api_key: args.use_api_key,
        refresh_token: args.refresh_token,
        timeout: host.bound(Duration::from_secs(args.timeout)),
        poll_interval: Duration::from_secs(args.poll_interval).max(Duration::from_millis(50)),
        wait_for_route: !args.no_wait_for_route,
        proxy_program: crate::paths::proxy_program()?,
        ..ConnectOptions::default()
    };
    let spinner = Spinner::default();
    let connection =
        host.block_on_waiting(&spinner, debug::connect(&plane, &name, &options, &spinner))?;
    if let Some(fingerprint) = &connection.host_key_fingerprint {
        eprintln!("host key {fingerprint} (pinned)");
    }
    let edit = EditOptions {
        config_path: args
            .ssh_config
            .clone()
            .unwrap_or_else(|| host.layout().ssh_config()),
        dry_run: false,
    };
    if args.shell {
        return open_shell(&host, args, &connection, &edit);
    }
    if !args.write_config {
        print!("{}", connection.ssh_config()?);
        eprintln!(
            "add this block to your ssh config, or run again with --write-config; then: ssh {}",
            args.host_alias
        );
        return Ok(ExitCode::SUCCESS);
    }
    install(args, &connection, &edit)
}

/// Debug runs passed over because they ended.
fn say_ended(ended: &[(String, String)]) {
    for (name, phase) in ended {
        eprintln!("the debug run {name} has ended ({phase}); run names stay taken");
    }
}

/// The debug run to connect to, by the one reuse policy (`runs::debug_run`): a live one under
/// `name` (or its numbered successors) is reused, else RUN's task is relaunched under the first
/// free one. Its name.
fn launch_or_reuse(
    host: &AppContext,
    plane: &flyte_debug_client::ControlPlane,
    scope: &RunScope,
    args: &DebugArgs,
    name: &str,
) -> anyhow::Result<String> {
    let pair = flyte_keys::ensure_keypair(host.layout().debug().path())?;
    let original = scope.run_id(&args.run);
    let run = host.block_on(runs::debug_run(plane, scope, name, |id| {
        runs::relaunch_request(plane, &original, &args.action, &pair.public_key, id)
    }))?;
    say_ended(&run.ended);
    match &run.phase {
        Some(phase) => eprintln!("reconnecting to the debug run {} ({phase})", run.name),
        None => eprintln!(
            "launched {}: run {} again with SSH debug on",
            run.name, args.run
        ),
    }
    Ok(run.name)
}

/// `--write-config`: install the Host block (and pin its key), then say what to type.
fn install(
    args: &DebugArgs,
    connection: &debug::Connection,
    edit: &EditOptions,
) -> anyhow::Result<ExitCode> {
    match debug::ssh::install(&connection.block, connection.host_key.as_deref(), edit)? {
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
    edit: &EditOptions,
) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt as _;
    if args.write_config {
        debug::ssh::install(&connection.block, connection.host_key.as_deref(), edit)?;
    }
    let block_file = host.layout().debug().ssh_config(&args.host_alias);
    let mut ssh = debug::ssh::shell_command(connection, &block_file)?;
    eprintln!(
        "connecting: ssh -F {} {}",
        block_file.display(),
        args.host_alias
    );
    // exec only returns when it could not start ssh.
    Err(DebugClientError::NoSshClient(ssh.exec()).into())
}
