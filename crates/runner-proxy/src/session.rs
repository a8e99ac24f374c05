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
//! The shell is an optimisation only: a call it cannot start (the shell or its connection is
//! gone) runs on an exec channel as before; a call that started and lost its shell is an
//! error, never run twice.

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// What the management host runs for the shell: POSIX sh reading commands from stdin.
pub(crate) const REMOTE_SHELL: &str = "exec sh -s";

/// The first lines the shell reads: the marker, a private directory for the calls' output
/// (removed when the shell ends), and the shell's end on a hang-up.
pub(crate) fn setup(marker: &str) -> String {
    format!(
        "m={marker}\nd=$(mktemp -d) || exit 1\nchmod 700 \"$d\"\ntrap 'rm -rf \"$d\"' EXIT\ntrap 'exit 129' HUP\ntrap 'exit 143' TERM\n"
    )
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
    /// The shell was gone before the command started: it did not run.
    NotStarted,
    /// The shell ended while the command ran (or said something unreadable).
    Lost,
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

    /// Run `command` and read its answer. The caller bounds the time it may take.
    pub(crate) async fn call(&mut self, command: &str) -> Answer {
        if self
            .stdin
            .write_all(program(command).as_bytes())
            .await
            .is_err()
        {
            return Answer::NotStarted;
        }
        // Anything before the start line is the shell's own noise (a login banner, say).
        loop {
            match self.next_line().await {
                None => return Answer::NotStarted,
                Some(line) => match parse_line(&self.marker, &line) {
                    Some(Framing::Start) => break,
                    Some(Framing::End(_)) => return Answer::Lost,
                    None => {}
                },
            }
        }
        let Some(Some(Framing::End(end))) = self
            .next_line()
            .await
            .map(|line| parse_line(&self.marker, &line))
        else {
            return Answer::Lost;
        };
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
