//! The ssh side: install the Host block and pin the host key, run a command with the system
//! OpenSSH client, or build the command of an interactive shell.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use flyte_ssh_config::{DebugHost, EditOptions, Outcome};

use crate::{Connection, DebugClientError, Result};

/// Install `block` in the ssh config (a managed block; nothing else in the file changes), and
/// pin the published host key in our known_hosts (or forget a stale one so `accept-new` can
/// learn the new pod's). A dry run pins nothing.
pub fn install(
    block: &DebugHost,
    host_key: Option<&str>,
    options: &EditOptions,
) -> Result<Outcome> {
    let lines = block.lines()?;
    let outcome = flyte_ssh_config::install(options, &block.alias, &lines)?;
    if !options.dry_run {
        pin_host_key(block, host_key)?;
    }
    Ok(outcome)
}

/// Pin `host_key` in the block's known_hosts under its `HostKeyAlias`, or forget a stale one so
/// `accept-new` can learn the new pod's.
pub fn pin_host_key(block: &DebugHost, host_key: Option<&str>) -> Result<()> {
    match host_key {
        Some(key) => {
            flyte_ssh_config::pin_host_key(&block.known_hosts_file, &block.host_key_alias, key)
        }
        None => flyte_ssh_config::forget_host_key(&block.known_hosts_file, &block.host_key_alias),
    }?;
    Ok(())
}

/// Write the connection's block to a file of its own (0600, replaced atomically), pin its host
/// key, and return the command that opens a shell: `ssh -F <file> <alias>`. Nothing in
/// `~/.ssh` is needed or touched.
pub fn shell_command(connection: &Connection, block_file: &Path) -> Result<std::process::Command> {
    let text = connection.ssh_config()?;
    flyte_fs::replace(block_file, text.as_bytes(), flyte_fs::SECRET_MODE)
        .map_err(|e| DebugClientError::file(block_file, e))?;
    pin_host_key(&connection.block, connection.host_key.as_deref())?;
    // The user's own ssh client is the point of a debug session.
    #[allow(clippy::disallowed_methods)]
    let mut command = std::process::Command::new("ssh");
    command
        .arg("-F")
        .arg(block_file)
        .arg(&connection.block.alias);
    Ok(command)
}

/// What a command run over ssh gave back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The remote command's exit code; 255 when ssh itself failed; 128 + the signal when ssh was
    /// killed by one.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `remote` (one shell command line, parsed by the remote shell) on `alias` with the system
/// OpenSSH client, reading the ssh config `config` (given with `-F`, since ssh finds `~/.ssh`
/// through the passwd entry, not `$HOME`). `BatchMode`: never a password or host-key prompt.
/// `input` is fed to the command's stdin by its own task, so a command that echoes its input, or
/// never reads it, cannot block; `timeout` covers all of it, and the ssh process is killed when
/// it runs out.
pub async fn exec(
    config: &Path,
    alias: &str,
    remote: &str,
    input: Option<String>,
    timeout: Duration,
) -> Result<ExecOutput> {
    flyte_ssh_config::validate_alias(alias)?;
    // The user's own ssh client is the point of a debug session.
    #[allow(clippy::disallowed_methods)]
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.arg("-F")
        .arg(config)
        .args(["-o", "BatchMode=yes", "-T", "--", alias, remote])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The child is ours: a timeout (or a panic) kills it by its handle.
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(DebugClientError::NoSshClient)?;
    let feeder = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => Some(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            // A remote side that exits without reading is not an error of ours.
            let _ = stdin.write_all(text.as_bytes()).await;
        })),
        _ => None,
    };
    let result = tokio::time::timeout(timeout, child.wait_with_output()).await;
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    let output = result
        .map_err(|_| DebugClientError::SshTimeout {
            alias: alias.to_owned(),
            waited_secs: timeout.as_secs(),
        })?
        .map_err(|source| DebugClientError::Ssh {
            alias: alias.to_owned(),
            source,
        })?;
    // A signal-killed ssh has no code; report it as the shell does (128 + signal).
    let code = output.status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt as _;
        128 + output.status.signal().unwrap_or(0)
    });
    Ok(ExecOutput {
        code,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// `words` as one command line for the remote shell, each word quoted as needed (shlex). A
/// NUL byte, which no shell word can carry, is refused.
pub fn join_words<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<String> {
    shlex::try_join(words).map_err(|_| DebugClientError::NulInCommand)
}
