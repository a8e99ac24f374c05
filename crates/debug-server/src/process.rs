//! One session channel: collect the pty and environment requests, start the shell, command or
//! subsystem, and carry bytes and signals until it ends. The process group is hung up when the
//! channel closes, so nothing started from a session outlives it.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg, Sig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::login::Login;

/// After a hang-up, how long a process group gets before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// After a pty session's shell exits, how long we keep copying output that background jobs
/// still write to the terminal.
const PTY_DRAIN: Duration = Duration::from_secs(2);
/// Chunks of client input buffered per session before we stop reading from the channel.
const INPUT_QUEUE: usize = 64;

#[derive(Debug, Clone)]
struct PtyRequest {
    term: String,
    cols: u16,
    rows: u16,
}

enum Start {
    Shell,
    Exec(String),
    Sftp,
}

/// Terminal dimensions from the client, clamped to what a pty can hold. A client without a
/// terminal of its own (`ssh -tt` from a script) sends 0x0: use the classic 80x24.
fn dimensions(cols: u32, rows: u32) -> (u16, u16) {
    let clamp = |v: u32, default: u16| {
        if v == 0 {
            default
        } else {
            u16::try_from(v).unwrap_or(u16::MAX)
        }
    };
    (clamp(cols, 80), clamp(rows, 24))
}

fn size(cols: u32, rows: u32) -> pty_process::Size {
    let (cols, rows) = dimensions(cols, rows);
    pty_process::Size::new(rows, cols)
}

/// Drive a session channel to its end.
pub(crate) async fn run(
    mut channel: Channel<Msg>,
    handle: Handle,
    login: Arc<Login>,
    groups: flyte_reaper::Groups,
) {
    let mut pty: Option<PtyRequest> = None;
    let mut client_env: Vec<(String, String)> = Vec::new();
    let start = loop {
        match channel.wait().await {
            Some(ChannelMsg::RequestPty {
                term,
                col_width,
                row_height,
                ..
            }) => {
                let (cols, rows) = dimensions(col_width, row_height);
                pty = Some(PtyRequest { term, cols, rows });
            }
            Some(ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            }) => {
                client_env.push((variable_name, variable_value));
            }
            Some(ChannelMsg::WindowChange {
                col_width,
                row_height,
                ..
            }) => {
                if let Some(p) = pty.as_mut() {
                    (p.cols, p.rows) = dimensions(col_width, row_height);
                }
            }
            Some(ChannelMsg::RequestShell { .. }) => break Start::Shell,
            Some(ChannelMsg::Exec { command, .. }) => {
                break Start::Exec(String::from_utf8_lossy(&command).into_owned());
            }
            Some(ChannelMsg::RequestSubsystem { name, .. }) if name == "sftp" => break Start::Sftp,
            None | Some(ChannelMsg::Close) => return,
            Some(_) => {}
        }
    };
    let env = login.environment(&client_env, pty.as_ref().map(|p| p.term.as_str()));
    let (program, args): (PathBuf, Vec<String>) = match &start {
        Start::Exec(command) => (login.shell.clone(), vec!["-c".to_owned(), command.clone()]),
        Start::Shell | Start::Sftp => (login.shell.clone(), vec!["-l".to_owned()]),
    };
    let outcome = match pty {
        _ if matches!(start, Start::Sftp) => Ok(run_sftp(&mut channel, &login).await),
        None => {
            // A session's shell or command: what the debug server is for.
            #[allow(clippy::disallowed_methods)]
            let mut command = tokio::process::Command::new(&program);
            command
                .args(&args)
                .env_clear()
                .envs(env)
                .current_dir(&login.workdir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                // Its own process group, so signals and the hang-up reach what it starts too.
                .process_group(0)
                .kill_on_drop(true);
            match command.spawn() {
                Ok(child) => run_piped(&mut channel, child, &groups).await,
                Err(e) => Err(format!("cannot start {}: {e}", program.display())),
            }
        }
        Some(request) => {
            run_pty(
                &mut channel,
                &program,
                &args,
                env,
                &login,
                &request,
                &groups,
            )
            .await
        }
    };
    let id = channel.id();
    match outcome {
        Ok(Some(status)) => report_exit(&channel, &handle, status).await,
        Ok(None) => {}
        Err(message) => {
            tracing::warn!(%message, "session failed");
            let _ = handle
                .extended_data(
                    id,
                    1,
                    bytes::Bytes::from(format!("flyte debug server: {message}\r\n")),
                )
                .await;
            let _ = channel.exit_status(127).await;
        }
    }
    let _ = channel.eof().await;
    let _ = channel.close().await;
}

/// Send the process's exit status, or the signal that ended it, as OpenSSH does.
async fn report_exit(channel: &Channel<Msg>, handle: &Handle, status: ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        let _ = channel
            .exit_status(u32::try_from(code).unwrap_or(255))
            .await;
    } else if let Some(signal) = status.signal() {
        let name = Signal::try_from(signal)
            .map_or_else(|_| Sig::Custom(signal.to_string()), to_ssh_signal);
        let _ = handle
            .exit_signal_request(
                channel.id(),
                name,
                status.core_dumped(),
                String::new(),
                String::new(),
            )
            .await;
    }
}

fn to_ssh_signal(signal: Signal) -> Sig {
    match signal {
        Signal::SIGABRT => Sig::ABRT,
        Signal::SIGALRM => Sig::ALRM,
        Signal::SIGFPE => Sig::FPE,
        Signal::SIGHUP => Sig::HUP,
        Signal::SIGILL => Sig::ILL,
        Signal::SIGINT => Sig::INT,
        Signal::SIGKILL => Sig::KILL,
        Signal::SIGPIPE => Sig::PIPE,
        Signal::SIGQUIT => Sig::QUIT,
        Signal::SIGSEGV => Sig::SEGV,
        Signal::SIGTERM => Sig::TERM,
        Signal::SIGUSR1 => Sig::USR1,
        other => Sig::Custom(other.as_str().trim_start_matches("SIG").to_owned()),
    }
}

fn from_ssh_signal(signal: &Sig) -> Option<Signal> {
    Some(match signal {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => format!("SIG{name}").parse().ok()?,
    })
}

fn signal_group(pgid: Option<u32>, signal: Signal) {
    if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Hang up a process group, and kill it if it is still there after a grace period.
fn hang_up(pgid: Option<u32>) {
    signal_group(pgid, Signal::SIGHUP);
    signal_group(pgid, Signal::SIGCONT);
    tokio::spawn(async move {
        tokio::time::sleep(KILL_GRACE).await;
        signal_group(pgid, Signal::SIGKILL);
    });
}

/// Client input for a process, in order.
enum Input {
    Data(bytes::Bytes),
    Eof,
    Resize(pty_process::Size),
}

/// Where client input goes: a pipe, or a pty (which can also be resized).
trait InputSink: AsyncWrite + Unpin + Send + 'static {
    fn resize(&self, _size: pty_process::Size) {}
    /// A pty has no end-of-file: the terminal stays open when the client's input ends.
    fn closes_on_eof(&self) -> bool {
        true
    }
}

impl InputSink for tokio::process::ChildStdin {}

impl InputSink for tokio::io::WriteHalf<tokio::io::DuplexStream> {}

impl InputSink for pty_process::OwnedWritePty {
    fn resize(&self, size: pty_process::Size) {
        let _ = pty_process::OwnedWritePty::resize(self, size);
    }
    fn closes_on_eof(&self) -> bool {
        false
    }
}

/// Forward client input on a task of its own, so a process that does not read its input never
/// stops us from copying its output or seeing it exit.
fn input_forwarder(mut sink: impl InputSink) -> mpsc::Sender<Input> {
    let (tx, mut rx) = mpsc::channel::<Input>(INPUT_QUEUE);
    tokio::spawn(async move {
        while let Some(input) = rx.recv().await {
            match input {
                Input::Data(data) => {
                    if sink.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Input::Resize(size) => sink.resize(size),
                Input::Eof if sink.closes_on_eof() => break,
                Input::Eof => {}
            }
        }
        let _ = sink.shutdown().await;
    });
    tx
}

/// The most a process's output is read at once.
const COPY_BYTES: usize = 64 * 1024;

fn copy_out<R, W>(mut from: R, mut to: W) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        // 64 KiB a read (a full default pipe, two SSH packets) instead of `copy`'s 8 KiB: a
        // quarter of the reads and wake-ups for bulk output such as `cat bigfile`.
        let mut from = tokio::io::BufReader::with_capacity(COPY_BYTES, &mut from);
        let _ = tokio::io::copy_buf(&mut from, &mut to).await;
        let _ = to.flush().await;
    })
}

/// Carry channel messages to the process until it has exited and its output is copied.
/// `Some(status)` when it ended; `None` when the client closed the channel first.
async fn pump(
    channel: &mut Channel<Msg>,
    pgid: Option<u32>,
    input: mpsc::Sender<Input>,
    exit: impl std::future::Future<Output = std::io::Result<ExitStatus>>,
    output: tokio::task::JoinHandle<()>,
    drain_after_exit: Option<Duration>,
) -> Option<ExitStatus> {
    tokio::pin!(exit, output);
    let mut status: Option<ExitStatus> = None;
    let mut output_done = false;
    // Input we could not queue yet: while it waits, we stop reading the channel (backpressure).
    let mut pending: Option<Input> = None;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    while status.is_none() || !output_done {
        tokio::select! {
            message = channel.wait(), if pending.is_none() => match message {
                Some(ChannelMsg::Data { data }) => pending = Some(Input::Data(data)),
                Some(ChannelMsg::Eof) => pending = Some(Input::Eof),
                Some(ChannelMsg::WindowChange { col_width, row_height, .. }) => {
                    pending = Some(Input::Resize(size(col_width, row_height)));
                }
                Some(ChannelMsg::Signal { signal }) => {
                    if let Some(signal) = from_ssh_signal(&signal) {
                        signal_group(pgid, signal);
                    }
                }
                None | Some(ChannelMsg::Close) => return None,
                Some(_) => {}
            },
            permit = input.reserve(), if pending.is_some() => {
                if let (Ok(permit), Some(item)) = (permit, pending.take()) {
                    permit.send(item);
                }
            }
            result = &mut exit, if status.is_none() => {
                status = Some(result.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(255 << 8)));
                if let Some(limit) = drain_after_exit {
                    drain.as_mut().reset(tokio::time::Instant::now() + limit);
                }
            }
            _ = &mut output, if !output_done => output_done = true,
            () = &mut drain, if !output_done => output_done = true,
        }
    }
    status
}

/// Ok(Some(status)) when the process ended; Ok(None) when the client closed first.
async fn run_piped(
    channel: &mut Channel<Msg>,
    mut child: tokio::process::Child,
    groups: &flyte_reaper::Groups,
) -> Result<Option<ExitStatus>, String> {
    let pgid = child.id();
    // Registered while the session lives: the server's owner can end it (run over, shutdown).
    let _member = pgid.map(|g| groups.adopt(g));
    let stdout = child
        .stdout
        .take()
        .map(|out| copy_out(out, channel.make_writer()));
    let stderr = child
        .stderr
        .take()
        .map(|err| copy_out(err, channel.make_writer_ext(Some(1))));
    let input = input_forwarder(child.stdin.take().ok_or("the process has no stdin")?);
    let output = tokio::spawn(async move {
        for task in [stdout, stderr].into_iter().flatten() {
            let _ = task.await;
        }
    });
    let result = pump(channel, pgid, input, child.wait(), output, None).await;
    // Whether the process ended or the client left: nothing it started outlives the channel.
    hang_up(pgid);
    Ok(result)
}

/// The SFTP server runs in-process on a pipe, driven like a process: its "exit" is the end of
/// its loop (when the client's input ends), reported as status 0 as OpenSSH's sftp-server does.
async fn run_sftp(channel: &mut Channel<Msg>, login: &Login) -> Option<ExitStatus> {
    const PIPE_BYTES: usize = 512 * 1024;
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    // russh-sftp runs its loop on a task of its own; the pipe end drops when the loop ends.
    let (ended, theirs) = crate::sftp::watched(theirs);
    russh_sftp::server::run(theirs, crate::sftp::FsSftp::new(login.workdir.clone())).await;
    let (from_sftp, to_sftp) = tokio::io::split(ours);
    let output = copy_out(from_sftp, channel.make_writer());
    let input = input_forwarder(to_sftp);
    let exit = async {
        let _ = ended.await;
        Ok(std::os::unix::process::ExitStatusExt::from_raw(0))
    };
    pump(channel, None, input, exit, output, None).await
}

async fn run_pty(
    channel: &mut Channel<Msg>,
    program: &PathBuf,
    args: &[String],
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    login: &Login,
    request: &PtyRequest,
    groups: &flyte_reaper::Groups,
) -> Result<Option<ExitStatus>, String> {
    let (pty, pts) = pty_process::open().map_err(|e| format!("cannot open a pty: {e}"))?;
    pty.resize(pty_process::Size::new(request.rows, request.cols))
        .map_err(|e| format!("cannot size the pty: {e}"))?;
    let mut child = pty_process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .current_dir(&login.workdir)
        .kill_on_drop(true)
        .spawn(pts)
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    // A pty child leads its own session: its pid is its process group.
    let pgid = child.id();
    let _member = pgid.map(|g| groups.adopt(g));
    let (reader, writer) = pty.into_split();
    let output = copy_out(reader, channel.make_writer());
    let input = input_forwarder(writer);
    let result = pump(channel, pgid, input, child.wait(), output, Some(PTY_DRAIN)).await;
    // Whether the process ended or the client left: nothing it started outlives the channel.
    hang_up(pgid);
    Ok(result)
}
