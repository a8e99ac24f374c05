//! Flyte's `ExternalCommand` login: a command the user configured (`admin.command`) prints a
//! token on its stdout. Run without a shell, bounded in time; the token is kept in memory
//! until it is about to expire or the server refuses it.

use std::time::Duration;

use flyte_api::{ApiError, Code, Secret, TokenFuture, TokenSource};
use tokio::sync::Mutex;

use crate::source::{Mint, MintFuture, TokenOrigin};
use crate::token::{Token, unix_now};
use crate::{AuthError, Result};

/// How long the command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_mins(2);
/// The most of its stdout (and of its stderr) that is read.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Tokens from a command's stdout.
pub struct ExternalCommand {
    argv: Vec<String>,
    current: Mutex<Option<Token>>,
}

impl std::fmt::Debug for ExternalCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalCommand")
            .field("program", &self.argv.first())
            .finish_non_exhaustive()
    }
}

impl ExternalCommand {
    /// The command `argv` (program first). An empty one is refused.
    pub fn new(argv: Vec<String>) -> Result<Self> {
        if argv.first().is_none_or(String::is_empty) {
            return Err(AuthError::Command(
                "admin.command is empty; give the program that prints a token and its arguments"
                    .to_owned(),
            ));
        }
        Ok(Self {
            argv,
            current: Mutex::new(None),
        })
    }

    /// The program, for messages (its arguments may hold secrets and are never shown).
    pub fn program(&self) -> &str {
        &self.argv[0]
    }

    async fn run(&self) -> Result<Token> {
        use tokio::io::AsyncReadExt as _;
        let program = self.program().to_owned();
        let fail =
            |detail: String| AuthError::Command(format!("the token command {program} {detail}"));
        // The user configured this command for exactly this: printing a token.
        #[allow(clippy::disallowed_methods)]
        let mut command = tokio::process::Command::new(&self.argv[0]);
        command
            .args(&self.argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own group, so a timeout ends what it started too (`sh -c` children).
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| fail(format!("cannot start: {e}")))?;
        let group = child.id();
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(fail("gave no output pipes".to_owned()));
        };
        let collect = async {
            // A token is short; what a broken command floods out is not kept.
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let (mut stdout, mut stderr) = (stdout.take(MAX_OUTPUT), stderr.take(MAX_OUTPUT));
            let (read_out, read_err) =
                tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err),);
            read_out.and(read_err)?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let Ok(collected) = tokio::time::timeout(COMMAND_TIMEOUT, collect).await else {
            if let Some(pid) = group.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(fail(format!(
                "printed no token within {} s",
                COMMAND_TIMEOUT.as_secs()
            )));
        };
        let (status, out, err) = collected.map_err(|e| fail(format!("failed: {e}")))?;
        if !status.success() {
            // Its last line of stderr says why; stdout may hold a token and is not shown.
            let stderr = String::from_utf8_lossy(&err);
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let last: String = last.chars().take(200).collect();
            return Err(fail(format!("exited with {status}: {last}")));
        }
        let token = String::from_utf8(out)
            .map_err(|_| fail("printed something that is not text".to_owned()))?;
        let token = token.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(fail(
                "printed no token (expected one line holding only the token)".to_owned(),
            ));
        }
        Ok(Token::new(Secret::new(token)))
    }
}

impl Mint for ExternalCommand {
    fn mint(&self, refresh: bool) -> MintFuture<'_> {
        Box::pin(async move {
            let mut current = self.current.lock().await;
            if !refresh && let Some(token) = current.clone().filter(|t| t.usable_at(unix_now())) {
                return Ok((token, TokenOrigin::Cache));
            }
            let token = self.run().await?;
            *current = Some(token.clone());
            Ok((token, TokenOrigin::Fresh))
        })
    }
}

impl TokenSource for ExternalCommand {
    fn token(&self, refresh: bool) -> TokenFuture<'_> {
        Box::pin(async move {
            self.mint(refresh)
                .await
                .map(|(t, _)| Some(t.value))
                .map_err(|e| ApiError::new(Code::Unauthenticated, e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> ExternalCommand {
        ExternalCommand::new(vec!["sh".into(), "-c".into(), script.into()]).unwrap()
    }

    #[tokio::test]
    async fn the_commands_stdout_is_the_token_and_failures_name_the_program() {
        let (token, origin) = sh("echo tok-123").mint(false).await.unwrap();
        assert_eq!(token.value.expose(), "tok-123");
        assert_eq!(origin, TokenOrigin::Fresh);

        for (script, want) in [
            (
                "echo 'bad things' >&2; exit 3",
                "exited with exit status: 3: bad things",
            ),
            ("true", "printed no token"),
            ("echo two words", "printed no token"),
        ] {
            let message = sh(script).mint(false).await.unwrap_err().to_string();
            assert!(message.contains("the token command sh"), "{message}");
            assert!(message.contains(want), "{script}: {message}");
        }
        let message = ExternalCommand::new(vec!["/nonexistent/print-token".into()])
            .unwrap()
            .mint(false)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("/nonexistent/print-token cannot start"),
            "{message}"
        );
        assert!(ExternalCommand::new(Vec::new()).is_err());
    }

    #[tokio::test]
    async fn a_token_is_reused_until_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let command = sh(&format!(
            "echo x >> {0}; wc -l < {0} | tr -d ' '",
            count.display()
        ));
        assert_eq!(command.mint(false).await.unwrap().0.value.expose(), "1");
        let (again, origin) = command.mint(false).await.unwrap();
        assert_eq!((again.value.expose(), origin), ("1", TokenOrigin::Cache));
        assert_eq!(command.mint(true).await.unwrap().0.value.expose(), "2");
    }
}
