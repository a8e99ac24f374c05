//! Progress of long waits on stderr: a spinner with what we wait for, the state seen last and the
//! elapsed time on a terminal; plain log lines (on each change of state, and every
//! [`PLAIN_EVERY`] while nothing changes) when stderr is a file or a pipe, so CI logs stay
//! readable.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

/// How often the spinner redraws.
const FRAME: Duration = Duration::from_millis(100);
/// In plain mode, how often an unchanged state is repeated.
const PLAIN_EVERY: Duration = Duration::from_secs(15);
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// One spinner line: `⠋ waiting for run dbg to start (QUEUED, 3 s)`.
fn spinner_line(frame: usize, what: &str, state: &str, elapsed: Duration) -> String {
    let glyph = FRAMES[frame % FRAMES.len()];
    format!("{glyph} {}", plain_line(what, state, elapsed))
}

fn plain_line(what: &str, state: &str, elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    if state.is_empty() {
        format!("{what} ({secs} s)")
    } else {
        format!("{what} ({state}, {secs} s)")
    }
}

/// A wait in progress. Dropping it clears the spinner line.
#[derive(Debug)]
pub(crate) struct Progress {
    what: String,
    state: String,
    started: Instant,
    terminal: bool,
    frame: usize,
    drawn: bool,
    /// When the plain-mode line was last written, and for which state.
    last_plain: Option<(Instant, String)>,
}

impl Progress {
    /// Start showing `what` (e.g. "waiting for run dbg to start").
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            state: String::new(),
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            frame: 0,
            drawn: false,
            last_plain: None,
        }
    }

    /// The state seen last (a phase, an HTTP status ...); shown next to what we wait for.
    pub(crate) fn update(&mut self, state: impl Into<String>) {
        self.state = state.into();
        self.show();
    }

    /// Move the spinner one frame; in plain mode, repeat a state already shown when it is due
    /// (nothing is written before the first state arrives).
    fn tick(&mut self) {
        if self.terminal {
            self.frame += 1;
            self.show();
        } else if self.last_plain.is_some() {
            self.show();
        }
    }

    fn show(&mut self) {
        let elapsed = self.started.elapsed();
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let line = spinner_line(self.frame, &self.what, &self.state, elapsed);
            // Carriage return and erase-line: the spinner redraws in place.
            let _ = write!(err, "\r\x1b[2K{line}");
            let _ = err.flush();
            self.drawn = true;
            return;
        }
        let due = match &self.last_plain {
            None => true,
            Some((at, state)) => *state != self.state || at.elapsed() >= PLAIN_EVERY,
        };
        if due {
            let _ = writeln!(err, "{}", plain_line(&self.what, &self.state, elapsed));
            self.last_plain = Some((Instant::now(), self.state.clone()));
        }
    }
}

/// Shows the waits a library reports ([`flyte_debug_client::Progress`]) as a [`Progress`] line,
/// animated by [`Spinner::drive`] while the library's future runs.
#[derive(Debug, Default)]
pub(crate) struct Spinner {
    current: std::sync::Mutex<Option<Progress>>,
}

impl Spinner {
    fn with(&self, f: impl FnOnce(&mut Option<Progress>)) {
        // A panic while drawing leaves nothing worth protecting: draw on.
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut current);
    }

    /// Run `future` to its end, redrawing the current wait every frame.
    pub(crate) async fn drive<F: std::future::Future>(&self, future: F) -> F::Output {
        let mut frames = tokio::time::interval(FRAME);
        frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut future = std::pin::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return output,
                _ = frames.tick() => self.with(|p| {
                    if let Some(p) = p.as_mut() {
                        p.tick();
                    }
                }),
            }
        }
    }
}

impl flyte_debug_client::Progress for Spinner {
    fn begin(&self, what: &str) {
        self.with(|p| *p = Some(Progress::new(what)));
    }

    fn update(&self, state: &str) {
        self.with(|p| {
            if let Some(p) = p.as_mut() {
                p.update(state);
            }
        });
    }

    fn end(&self) {
        self.with(|p| *p = None);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_what_we_wait_for_the_state_and_the_time() {
        for (frame, state, secs, want) in [
            (0, "", 0, "⠋ waiting for run dbg (0 s)"),
            (1, "QUEUED", 3, "⠙ waiting for run dbg (QUEUED, 3 s)"),
            (10, "RUNNING", 61, "⠋ waiting for run dbg (RUNNING, 61 s)"),
        ] {
            assert_eq!(
                spinner_line(
                    frame,
                    "waiting for run dbg",
                    state,
                    Duration::from_secs(secs)
                ),
                want
            );
        }
        assert_eq!(
            plain_line("waiting for run dbg", "QUEUED", Duration::from_millis(2500)),
            "waiting for run dbg (QUEUED, 2 s)"
        );
    }
}
