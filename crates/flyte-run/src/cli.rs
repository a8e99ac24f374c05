//! The command line: `flyte-run PLAYBOOK.rhai`, `flyte-run -e SCRIPT` and the subcommands.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};

use crate::script::{self, Host, ScriptSource};

/// `flyte-run --version`: the version, the commit it was built from and that commit's date.
pub(crate) const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("FLYTE_RUN_COMMIT"),
    " ",
    env!("FLYTE_RUN_DATE"),
    ")"
);

/// Get a shell inside a running Flyte task, and script the operator chores around it.
///
/// flyte-run runs Rhai playbooks: short scripts that launch tasks, wait for them, connect over
/// SSH and run kubectl or curl where the cluster network is. The main job:
///
///     flyte-run playbooks/debug.rhai
///
/// A script sees the modules `keys::`, `kservice::`, `ssh::`, `auth::`, `runs::`, `debug::`,
/// `runner::` and `git::`,
/// the map `args` built from `--set`, `env(name)` and `sleep(seconds)`. `import "name"` finds
/// name.rhai beside the playbook, then in scripts/ (e.g. `import "retry" as retry;`).
#[derive(Debug, Parser)]
#[command(name = "flyte-run", version = VERSION, verbatim_doc_comment)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct Cli {
    /// The playbook to run (a `.rhai` file).
    #[arg(
        value_name = "PLAYBOOK",
        conflicts_with = "eval",
        required_unless_present = "eval"
    )]
    playbook: Option<PathBuf>,

    /// Run SCRIPT instead of a playbook file; a non-unit result is printed (strings as they are,
    /// anything else as JSON).
    #[arg(short = 'e', long = "eval", value_name = "SCRIPT")]
    eval: Option<String>,

    /// Set `args.KEY` for the script. VALUE is typed: integers, floats, `true`/`false`, else a
    /// string. Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_set)]
    set: Vec<(String, rhai::Dynamic)>,

    /// Flyte's config file to read instead of the first one found in the Flyte SDK's search
    /// order: `./config.yaml`, `./.flyte/config.yaml`, `<git root>/.flyte/config.yaml`,
    /// `$UCTL_CONFIG`, `$FLYTECTL_CONFIG`, `~/.union/config.yaml`, `~/.flyte/config.yaml`.
    #[arg(long = "config", global = true, value_name = "FILE")]
    flyte_config: Option<std::path::PathBuf>,

    /// The Flyte control-plane endpoint (default: the configured one, else the local sandbox).
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,

    /// Print each external action (commands, requests) instead of performing it, where the script
    /// can go on without a real answer.
    #[arg(long)]
    dry_run: bool,

    /// Stop the script after this many seconds of wall-clock time.
    #[arg(long, value_name = "SECONDS", value_parser = crate::context::parse_seconds)]
    timeout: Option<Duration>,

    /// Stop the script after this many seconds of CPU time spent computing (waits cost none),
    /// so a runaway loop ends even without --timeout.
    #[arg(long, value_name = "SECONDS", value_parser = crate::context::parse_seconds, default_value = "120")]
    cpu_limit: Duration,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Relaunch RUN in debug mode (or reuse that debug run) and connect to it, like `flyte debug`.
    ///
    /// Waits for the debug run's route, writes a token to ~/.flyte/ssh-debug/<alias>.headers
    /// (0600), checks the route answers, and prints the ssh Host block (or installs it with
    /// --write-config) with the server's host key pinned. Then: `ssh flyte-debug`.
    Debug(crate::debug_command::DebugArgs),
    /// Carry ssh's stdin/stdout over a WebSocket (the `ProxyCommand` of a debug Host block).
    ///
    /// Writes nothing but tunnel bytes to stdout; errors are one line on stderr. Exit codes: 0
    /// the connection ended; 69 the route is not serving yet (404, 5xx, refused, timeout); 76
    /// protocol error; 77 credentials refused (401/403: refresh the token); 78 a local file
    /// (headers file, CA file) or the URL is unusable; 130 interrupted; 1 anything else.
    Tunnel(crate::tunnel::TunnelArgs),
    /// Run the SSH debug server inside a task (reads `_F_SSH_PK`, `_F_SSH_USER`,
    /// `SSH_SERVER_MAX_UPTIME_SECONDS`).
    ///
    /// Listens with the WebSocket bridge; `GET` answers `200 ok` (the readiness probe); only the
    /// key in `_F_SSH_PK` logs in. Prints `SSH debug server is ready` with the host key's
    /// fingerprint once it accepts connections.
    DebugServer(crate::debug_server::DebugServerArgs),
    /// Run the TaskAction controller against a Kubernetes cluster (KUBECONFIG, ~/.kube/config, or
    /// in-cluster): task pods for TaskActions, their status, finalizer and terminal labels.
    Operator(crate::operator::OperatorArgs),
    /// The embedded control plane on this machine: start, stop, status, serve.
    #[command(subcommand)]
    Sandbox(crate::sandbox::SandboxCommand),
    /// Write or show flyte-run's settings (~/.flyte/flyte-run.json).
    #[command(subcommand)]
    Config(crate::config::ConfigCommand),
    /// Check this machine: the ssh client, the debug key pair, the ssh config, the endpoint, a
    /// token, the runner VM. Each problem is named with its fix; exits 1 when something is broken.
    Doctor {
        /// The control plane to check (default: as for playbooks).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
    /// Write the man page (`flyte-run.1`) and the command-line reference (`cli.md`) into DIR
    /// (what `cargo xtask codegen` commits under docs/cli/).
    #[command(hide = true)]
    CliReference { dir: PathBuf },
    /// Write the script surface's editor definitions (`.d.rhai`) and reference page into DIR
    /// (what `cargo xtask codegen` commits under docs/rhai/).
    #[command(hide = true)]
    ScriptReference {
        /// The directory to write into (created when missing).
        dir: std::path::PathBuf,
    },
    /// Print a shell completion script, e.g. `flyte-run completions bash > /etc/bash_completion.d/flyte-run`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

fn parse_set(raw: &str) -> Result<(String, rhai::Dynamic), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {raw:?}"))?;
    let key = key.trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "invalid key {key:?}: use letters, digits and '_' so scripts can write args.{key}"
        ));
    }
    Ok((key.to_owned(), script::typed_value(value)))
}

impl Cli {
    /// The log level when `FLYTE_RUN_LOG` names none.
    pub(crate) fn default_log(&self) -> &'static str {
        match self.command {
            Some(Command::Operator(_)) => crate::operator::DEFAULT_LOG,
            _ => "warn",
        }
    }
}

pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::config::set_flyte_config_flag(cli.flyte_config.clone());
    if let Some(command) = cli.command {
        return match command {
            Command::Debug(args) => crate::debug_command::run(&args),
            Command::Tunnel(args) => Ok(crate::tunnel::run(&args)),
            Command::DebugServer(args) => crate::debug_server::run(&args),
            Command::Sandbox(command) => crate::sandbox::run(&command),
            Command::Operator(args) => crate::operator::run(&args),
            Command::Config(command) => crate::config::run(&command),
            Command::Doctor { endpoint } => crate::doctor::run(endpoint),
            #[allow(
                clippy::disallowed_methods,
                reason = "generated documents in the repository, not files a user keeps"
            )]
            Command::CliReference { dir } => {
                std::fs::create_dir_all(&dir)?;
                let mut man = Vec::new();
                // No version: the committed page must not change with each commit or release.
                clap_mangen::Man::new(Cli::command().version(None::<&str>)).render(&mut man)?;
                std::fs::write(dir.join("flyte-run.1"), man)?;
                std::fs::write(dir.join("cli.md"), cli_reference(&Cli::command()))?;
                std::fs::write(dir.join("environment.md"), environment_reference())?;
                Ok(ExitCode::SUCCESS)
            }
            #[allow(
                clippy::disallowed_methods,
                reason = "generated documents in the repository, not files a user keeps"
            )]
            Command::ScriptReference { dir } => {
                std::fs::create_dir_all(&dir)?;
                for (name, text) in script::reference::files()? {
                    std::fs::write(dir.join(name), text)?;
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Completions { shell } => {
                let mut cmd = Cli::command();
                clap_complete::generate(shell, &mut cmd, "flyte-run", &mut std::io::stdout());
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    let source = match (cli.playbook, cli.eval) {
        (Some(path), None) => ScriptSource::File(path),
        (None, Some(text)) => ScriptSource::Inline(text),
        // clap's `conflicts_with` and `required_unless_present` rule out the other cases.
        _ => bail!("give either a PLAYBOOK or -e SCRIPT"),
    };
    let app = crate::context::AppContext {
        dry_run: cli.dry_run,
        timeout: cli.timeout,
        ..crate::context::AppContext::new(crate::paths::home_dir()?, cli.endpoint)
    };
    let host = std::sync::Arc::new(Host {
        args: cli.set.into_iter().map(|(k, v)| (k.into(), v)).collect(),
        cpu_limit: cli.cpu_limit,
        ..Host::new(app)
    });
    let print_result = matches!(source, ScriptSource::Inline(_));
    match script::run(&host, &source) {
        Ok(value) => {
            if print_result && !value.is_unit() {
                let text = script::display_value(&value).context("cannot print the result")?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{text}").context("cannot write to stdout")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The command-line reference in Markdown: every visible command with its usage, description
/// and arguments, from the same definitions as `--help`.
fn cli_reference(root: &clap::Command) -> String {
    fn command(out: &mut String, cmd: &clap::Command, path: &str) {
        use std::fmt::Write as _;
        let mut cmd = cmd.clone().bin_name(path);
        let _ = writeln!(out, "## `{path}`\n");
        if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
            let _ = writeln!(out, "{about}\n");
        }
        let usage = cmd.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage: ");
        let _ = writeln!(out, "```text\n{usage}\n```\n");
        let args: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
            .collect();
        if !args.is_empty() {
            let _ = writeln!(out, "| argument | meaning |\n|---|---|");
            for arg in args {
                let name = match (arg.get_short(), arg.get_long()) {
                    (Some(s), Some(l)) => format!("-{s}, --{l}"),
                    (None, Some(l)) => format!("--{l}"),
                    (Some(s), None) => format!("-{s}"),
                    (None, None) => arg.get_id().as_str().to_uppercase(),
                };
                let takes_value = arg.get_action().takes_values();
                let value = arg
                    .get_value_names()
                    .filter(|_| {
                        takes_value && (arg.get_long().is_some() || arg.get_short().is_some())
                    })
                    .and_then(|v| v.first())
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default();
                let help = arg
                    .get_long_help()
                    .or_else(|| arg.get_help())
                    .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
                    .unwrap_or_default();
                let defaults: Vec<String> = arg
                    .get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect();
                let default = if defaults.is_empty() || !takes_value {
                    String::new()
                } else {
                    let stop = if help.ends_with('.') { "" } else { "." };
                    format!("{stop} Default: `{}`.", defaults.join(","))
                };
                let _ = writeln!(out, "| `{name}{value}` | {help}{default} |");
            }
            out.push('\n');
        }
        for sub in cmd.get_subcommands_mut() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let sub_path = format!("{path} {}", sub.get_name());
            command(out, sub, &sub_path);
        }
    }
    let mut out = String::from(
        "# flyte-run command line\n\nGenerated from the program's own definitions by `cargo xtask codegen`; `flyte-run --help` and `man ./flyte-run.1` show the same.\n\n",
    );
    command(&mut out, root, "flyte-run");
    out
}

/// Every environment variable and Flyte configuration key flyte-run reads, from the lists in
/// the code (`env_vars::ALL`, `flyte_config::SETTINGS`, the debug server's and the runner's
/// contract constants).
fn environment_reference() -> String {
    use std::fmt::Write as _;
    let one_line = |doc: &str| {
        doc.lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
            .replace('|', "\\|")
    };
    let mut out = String::from(
        "# Environment variables and configuration keys\n\nGenerated from the lists in the code by `cargo xtask codegen`.\n\n## Read by flyte-run\n\n| variable | meaning |\n|---|---|\n",
    );
    for (name, doc) in crate::env_vars::ALL {
        let _ = writeln!(out, "| `{name}` | {} |", one_line(doc));
    }
    out.push_str("\n## Flyte's config.yaml keys (and the variables that set them)\n\nRead from the file Flyte's SDK would use (or `--config FILE`); a variable wins over the file, flags over both.\n\n| key | variables |\n|---|---|\n");
    for setting in flyte_config::SETTINGS {
        let env: Vec<String> = setting.env.iter().map(|e| format!("`{e}`")).collect();
        let secret = if setting.secret {
            " (secret: never shown)"
        } else {
            ""
        };
        let _ = writeln!(out, "| `{}`{secret} | {} |", setting.key, env.join(", "));
    }
    out.push_str("\n## The debug run's contract (read by `flyte-run debug-server` in the task)\n\n| variable | meaning |\n|---|---|\n");
    for (name, doc) in [
        (
            flyte_debug_server::settings::ENV_ENABLE,
            "`1`/`true`/`yes`: start the debug server before the task",
        ),
        (
            flyte_debug_server::settings::ENV_PUBLIC_KEY,
            "the one OpenSSH public key allowed to log in",
        ),
        (
            flyte_debug_server::settings::ENV_VSCODE,
            "asks the backend for the readiness probe and the IDE link",
        ),
        (
            flyte_debug_server::settings::ENV_USER,
            "the login user name shown to clients",
        ),
        (
            flyte_debug_server::settings::ENV_MAX_UPTIME,
            "the server stops after this many seconds (default 36000)",
        ),
        (
            flyte_debug_server::settings::ENV_RESUME_GRACE,
            "how long a broken tunnel session waits for its client (default 900; 0: no resumption)",
        ),
    ] {
        let _ = writeln!(out, "| `{name}` | {doc} |");
    }
    out.push_str(
        "\n## The runner (`runner::` in playbooks)\n\n| variable | meaning |\n|---|---|\n",
    );
    for (name, doc) in [
        (
            flyte_runner_proxy::ENV_SSH_HOST,
            "the ssh target of the management host",
        ),
        (
            flyte_runner_proxy::ENV_SSH_KEY,
            "the private key for the management host",
        ),
        (
            flyte_runner_proxy::ENV_VM,
            "the incus VM on the cluster network",
        ),
    ] {
        let _ = writeln!(out, "| `{name}` | {doc} |");
    }
    out
}
