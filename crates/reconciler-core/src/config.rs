//! Tunables and the well-known names the reconciler shares with Flyte.

use std::collections::BTreeSet;
use std::time::Duration;

/// The finalizer that keeps a TaskAction around until its plugin resources are cleaned up.
pub const FINALIZER: &str = "flyte.org/plugin-finalizer";
/// Label set on every terminal TaskAction, so the garbage collector can select them.
pub const TERMINATION_STATUS_LABEL: &str = "flyte.org/termination-status";
/// The only value [`TERMINATION_STATUS_LABEL`] takes.
pub const TERMINATED: &str = "terminated";
/// Label holding the completion time as `YYYY-MM-DD.HH-MM` (UTC).
pub const COMPLETED_TIME_LABEL: &str = "flyte.org/completed-time";

/// Error code of the permanent failure after too many consecutive system failures.
pub const MAX_SYSTEM_FAILURES_EXCEEDED: &str = "MaxSystemFailuresExceeded";
/// Error code of the permanent failure after the last user attempt failed.
pub const MAX_RETRIES_EXCEEDED: &str = "MaxRetriesExceeded";
/// Plugin error codes that no retry can fix; they fail the action at once, as a user error.
pub const DEFAULT_NON_RETRYABLE_CODES: [&str; 2] = ["BadTaskSpecification", "MetadataTooLarge"];

/// Consecutive system failures tolerated; the next one fails the action.
pub const DEFAULT_MAX_SYSTEM_FAILURES: u32 = 3;
/// How often a non-terminal action is looked at again (also the cache-reservation heartbeat).
pub const DEFAULT_REQUEUE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a completed action is kept before it is deleted.
pub const DEFAULT_COMPLETED_TTL: Duration = Duration::from_hours(1);
/// How often a driver should revisit terminated actions so that expired ones get deleted.
pub const DEFAULT_GC_SWEEP_INTERVAL: Duration = Duration::from_mins(30);
/// Status writes tried within one pass before the pass gives up and asks to be retried.
pub const DEFAULT_STATUS_WRITE_ATTEMPTS: u32 = 3;
/// Delay before retrying a pass that failed on an error (conflicts retry at once).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Everything a pass needs to know besides the object and the time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Task types the driver has a plugin for. A task of another type fails with
    /// `PluginNotFound`; this is a set of names (data), so the machine stays free of plugins.
    pub task_types: BTreeSet<String>,
    /// Consecutive system failures tolerated before the action fails permanently.
    pub max_system_failures: u32,
    /// Plugin error codes that fail the action at once, as a user error.
    pub non_retryable_codes: Vec<String>,
    /// Requeue interval while not terminal; also the cache-reservation heartbeat.
    pub requeue_interval: Duration,
    /// Time-to-live of a terminal action, counted from its last phase change.
    pub completed_ttl: Duration,
    /// How often the driver should re-run passes over terminated actions (the GC sweep).
    pub gc_sweep_interval: Duration,
    /// Attempts at a failed (not conflicting) status write within one pass.
    pub status_write_attempts: u32,
    /// Delay before retrying a pass that ended on an error.
    pub retry_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            task_types: BTreeSet::new(),
            max_system_failures: DEFAULT_MAX_SYSTEM_FAILURES,
            non_retryable_codes: DEFAULT_NON_RETRYABLE_CODES
                .iter()
                .map(|code| (*code).to_owned())
                .collect(),
            requeue_interval: DEFAULT_REQUEUE_INTERVAL,
            completed_ttl: DEFAULT_COMPLETED_TTL,
            gc_sweep_interval: DEFAULT_GC_SWEEP_INTERVAL,
            status_write_attempts: DEFAULT_STATUS_WRITE_ATTEMPTS,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
        }
    }
}

impl Config {
    /// The defaults, with plugins for the given task types.
    pub fn with_task_types<I, S>(task_types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            task_types: task_types.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Whether a plugin is registered for `task_type`.
    pub fn has_plugin(&self, task_type: &str) -> bool {
        self.task_types.contains(task_type)
    }

    /// Whether a plugin error with this code must not be retried.
    pub fn is_non_retryable(&self, code: &str) -> bool {
        self.non_retryable_codes.iter().any(|c| c == code)
    }
}
