//! How long waits report what they wait for. The library only reports; drawing (a spinner, log
//! lines) is the caller's.

/// Receives the state of a wait while it lasts. Called from the task that waits; implementors
/// that draw on a timer of their own keep what they are told and draw it.
pub trait Progress: Send + Sync {
    /// A wait begins: `what` says what for ("waiting for run r to be RUNNING").
    fn begin(&self, what: &str);
    /// The state seen last (a phase, an HTTP answer), each time it is looked at.
    fn update(&self, state: &str);
    /// The wait is over, whichever way it ended.
    fn end(&self);
}

/// Reports nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn begin(&self, _what: &str) {}
    fn update(&self, _state: &str) {}
    fn end(&self) {}
}

/// A wait in progress; ends the report when dropped, however the wait ends.
pub(crate) struct Waiting<'a>(&'a dyn Progress);

impl<'a> Waiting<'a> {
    pub(crate) fn begin(progress: &'a dyn Progress, what: &str) -> Self {
        progress.begin(what);
        Self(progress)
    }

    pub(crate) fn update(&self, state: &str) {
        self.0.update(state);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.end();
    }
}
