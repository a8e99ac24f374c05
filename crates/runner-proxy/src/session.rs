//! One shell on the management host that runs a shared runner's calls one after another.
//!
//! Every SSH exec channel costs a session on the server: OpenSSH's sshd (9.2, measured here)
//! sends a command's exit status about 100 ms after the command ended, whatever the command, so
//! a connection shared by multiplexing still paid that per call. A shell started once per
//! runner instead reads the calls' command lines on its stdin. For each call it prints a start
//! line, runs the command with its output in files of a private (0700) directory, then prints
//! an end line (exit code, byte counts) and the output itself: the framing lines carry a marker
//! that the shell's own start-up output cannot contain, and the byte counts make the output
//! unambiguous whatever it contains. The command is exactly the one an exec channel would run
//! (`incus exec ... bash -lc ...`), so the VM sees no difference.
//!
//! The shell is an optimisation only. Before each command the shell must answer a ping: one
//! that does not (the shell or its connection is gone) has run nothing, and the call runs on an
//! exec channel as before. Once the command is sent, a lost shell is an error that says the
//! command may have run; it is never sent twice.

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// What the management host runs for the shell: POSIX sh reading commands from stdin.
pub(crate) const REMOTE_SHELL: &str = "exec sh -s";

/// The most output (stdout and stderr together) one call may return through the shell.
pub(crate) const MAX_OUTPUT: usize = 256 * 1024 * 1024;

/// The first lines the shell reads: the marker, a private directory for the calls' output (in
/// the user's runtime directory, a memory file system, where there is one), removed when the
/// shell ends however it ends: end of input, a hang-up, a TERM, or a broken pipe when it
/// reports to a client that has gone.
pub(crate) fn setup(marker: &str) -> String {
    format!(
        "m={marker}\n\
         d=$(mktemp -d -p \"${{XDG_RUNTIME_DIR:-/nonexistent}}\" 2>/dev/null || mktemp -d) || exit 1\n\
         chmod 700 \"$d\"\n\
         trap 'rm -rf \"$d\"' EXIT\n\
         trap 'rm -rf \"$d\"; exit 129' HUP\n\
         trap 'rm -rf \"$d\"; exit 141' PIPE\n\
         trap 'rm -rf \"$d\"; exit 143' TERM\n"
    )
}

/// The line that asks the shell to say it is there.
pub(crate) fn ping() -> &'static str {
    "printf '%s ready\\n' \"$m\"\n"
}

/// The lines that run `command` (a command line for the management host's shell) and report.
pub(crate) fn program(command: &str) -> String {
    format!(
        "printf '%s start\\n' \"$m\"; ( {command}\n) </dev/null >\"$d/o\" 2>\"$d/e\"; c=$?; \
         printf '%s end %s %s %s\\n' \"$m\" \"$c\" $(wc -c <\"$d/o\") $(wc -c <\"$d/e\"); \
         cat \"$d/o\" \"$d/e\"; : >\"$d/o\"; : >\"$d/e\"\n"
    )
}

/// The exit code and output sizes an end line reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    pub code: i32,
    pub stdout: usize,
    pub stderr: usize,
}

/// A line the shell prints around a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// The shell answers a ping.
    Ready,
    /// The command starts.
    Start,
    /// The command ended.
    End(End),
}

/// The framing line `line` is, if it is one.
pub(crate) fn parse_line(marker: &str, line: &str) -> Option<Framing> {
    let rest = line.trim_end_matches(['\n', '\r']).strip_prefix(marker)?;
    let mut words = rest.split_whitespace();
    match words.next()? {
        "ready" if words.next().is_none() => Some(Framing::Ready),
        "start" if words.next().is_none() => Some(Framing::Start),
        "end" => {
            let code = words.next()?.parse().ok()?;
            let stdout = words.next()?.parse().ok()?;
            let stderr = words.next()?.parse().ok()?;
            words.next().is_none().then_some(Framing::End(End {
                code,
                stdout,
                stderr,
            }))
        }
        _ => None,
    }
}

/// How a call through the shell went.
#[derive(Debug)]
pub(crate) enum Answer {
    /// The command ran: its exit code and output.
    Done {
        code: i32,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// The shell did not answer the ping: the command was not sent.
    NotStarted,
    /// The shell ended after the command was sent (or said something unreadable).
    Lost,
    /// The command ran, but its output is larger than [`MAX_OUTPUT`].
    TooLarge,
}

/// The running shell (its ssh process is killed when this drops).
#[derive(Debug)]
pub(crate) struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    marker: String,
}

impl Shell {
    /// Take over `child` (ssh running [`REMOTE_SHELL`], stdin and stdout piped) and send the
    /// setup lines.
    pub(crate) async fn start(mut child: Child, marker: String) -> Option<Self> {
        let mut stdin = child.stdin.take()?;
        let stdout = BufReader::with_capacity(64 * 1024, child.stdout.take()?);
        stdin.write_all(setup(&marker).as_bytes()).await.ok()?;
        Some(Self {
            child,
            stdin,
            stdout,
            marker,
        })
    }

    /// Whether the shell's ssh process is still running.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    async fn next_line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        // A line is at most a framing line or start-up noise; bound what one may hold.
        let n = (&mut self.stdout)
            .take(64 * 1024)
            .read_until(b'\n', &mut line)
            .await
            .ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&line).into_owned())
    }

    /// The next framing line, passing over anything else (start-up noise such as a login
    /// banner); `None` at the end of the shell's output.
    async fn next_framing(&mut self) -> Option<Framing> {
        loop {
            let line = self.next_line().await?;
            if let Some(framing) = parse_line(&self.marker, &line) {
                return Some(framing);
            }
        }
    }

    /// Run `command` and read its answer. The caller bounds the time it may take; a call
    /// abandoned midway leaves the shell unusable, so the caller drops it then.
    pub(crate) async fn call(&mut self, command: &str) -> Answer {
        // Nothing is sent before the shell shows it is there: until then a failure ran nothing.
        if self.stdin.write_all(ping().as_bytes()).await.is_err()
            || tokio::time::timeout(PING_TIMEOUT, self.next_framing()).await
                != Ok(Some(Framing::Ready))
        {
            return Answer::NotStarted;
        }
        if self
            .stdin
            .write_all(program(command).as_bytes())
            .await
            .is_err()
        {
            return Answer::Lost;
        }
        if self.next_framing().await != Some(Framing::Start) {
            return Answer::Lost;
        }
        let Some(Framing::End(end)) = self.next_framing().await else {
            return Answer::Lost;
        };
        if end.stdout.saturating_add(end.stderr) > MAX_OUTPUT {
            return Answer::TooLarge;
        }
        let mut stdout = vec![0; end.stdout];
        let mut stderr = vec![0; end.stderr];
        if self.stdout.read_exact(&mut stdout).await.is_err()
            || self.stdout.read_exact(&mut stderr).await.is_err()
        {
            return Answer::Lost;
        }
        Answer::Done {
            code: end.code,
            stdout,
            stderr,
        }
    }
}

/// How long the shell may take to answer its ping before it is taken for gone.
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A marker no start-up output contains: this process and the time, in hex.
pub(crate) fn new_marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("flyte-run-call-{:x}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_lines_are_read_and_anything_else_is_not() {
        let m = "flyte-run-call-1-2";
        for (line, want) in [
            ("flyte-run-call-1-2 start\n", Some(Framing::Start)),
            ("flyte-run-call-1-2 ready\n", Some(Framing::Ready)),
            (
                "flyte-run-call-1-2 end 0 12 0\n",
                Some(Framing::End(End {
                    code: 0,
                    stdout: 12,
                    stderr: 0,
                })),
            ),
            (
                // BSD's wc pads its count; the shell's word splitting drops that, and so do we.
                "flyte-run-call-1-2 end 124   3  40\r\n",
                Some(Framing::End(End {
                    code: 124,
                    stdout: 3,
                    stderr: 40,
                })),
            ),
            ("flyte-run-call-1-2 end 0 12\n", None),
            ("flyte-run-call-1-2 end 0 12 1 9\n", None),
            ("flyte-run-call-1-2 end x 12 1\n", None),
            ("flyte-run-call-1-2 end 0 -1 1\n", None),
            ("flyte-run-call-1-2 start now\n", None),
            ("Welcome to the management host\n", None),
            ("flyte-run-call-9-9 start\n", None),
            ("", None),
        ] {
            assert_eq!(parse_line(m, line), want, "{line:?}");
        }
    }

    #[test]
    fn the_program_runs_the_command_in_a_subshell_with_no_stdin() {
        let text = program("incus exec 'vm' -- true");
        assert!(
            text.contains("( incus exec 'vm' -- true\n) </dev/null"),
            "{text}"
        );
        assert!(text.ends_with('\n'));
        assert!(setup("M").starts_with("m=M\n"));
    }
}
