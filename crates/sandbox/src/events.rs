//! Action events from executors elsewhere (`flyte-run operator --events-url`, or Flyte's own
//! executor pointed here), received on `EventsProxyService/Record` and folded into the
//! actions' details, which `RunService.GetActionDetails` answers for runs the sandbox does not
//! drive itself.
//!
//! Pure: no I/O, no clock. Bounded: one event is kept per (attempt, phase), the newest version
//! (delivery is at least once, so repeats fold away), at most [`MAX_ATTEMPTS`] attempts per
//! action and [`MAX_ACTIONS`] actions; past that a record is refused, never stored in part.

use std::collections::{BTreeMap, HashMap};

use buffa::MessageField;
use flyte_idl::flyteidl2::common::{ActionIdentifier, ActionPhase, RunIdentifier};
use flyte_idl::flyteidl2::workflow::{self, ActionEvent};

/// Actions the journal keeps events for.
pub(crate) const MAX_ACTIONS: usize = 10_000;
/// Attempts per action (Flyte's retries and system failures stay far below).
pub(crate) const MAX_ATTEMPTS: u32 = 100;
/// Events in one `Record` call.
pub(crate) const MAX_EVENTS_PER_RECORD: usize = 1_000;

/// Which action: project, domain, run, action.
type ActionKey = (String, String, String, String);

/// Why a record was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// An event is malformed (the message names which and what).
    Invalid(String),
    /// A limit would be passed.
    Full(String),
}

/// Events by action, each attempt's phases keyed by the phase number.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    actions: HashMap<ActionKey, BTreeMap<u32, BTreeMap<i32, ActionEvent>>>,
}

fn key_of(id: &ActionIdentifier) -> Option<ActionKey> {
    let run = id.run.as_option()?;
    Some((
        run.project.clone(),
        run.domain.clone(),
        run.name.clone(),
        id.name.clone(),
    ))
}

/// The first problem with `event`, the `index`th of its request.
fn check(index: usize, event: &ActionEvent) -> Result<ActionKey, Refusal> {
    let invalid = |what: &str| Refusal::Invalid(format!("events[{index}]: {what}"));
    let id = event
        .id
        .as_option()
        .ok_or_else(|| invalid("give id (run and action name)"))?;
    let key = key_of(id).ok_or_else(|| invalid("give id.run (project, domain, name)"))?;
    for (field, value) in [
        ("id.run.project", &key.0),
        ("id.run.domain", &key.1),
        ("id.run.name", &key.2),
        ("id.name", &key.3),
    ] {
        if value.is_empty() {
            return Err(invalid(&format!("{field} is empty")));
        }
    }
    if event.attempt == 0 {
        return Err(invalid("attempt must be at least 1"));
    }
    if event.attempt > MAX_ATTEMPTS {
        return Err(Refusal::Full(format!(
            "events[{index}]: attempt {} is past the sandbox's limit of {MAX_ATTEMPTS}",
            event.attempt
        )));
    }
    if event
        .phase
        .as_known()
        .is_none_or(|p| p == ActionPhase::Unspecified)
    {
        return Err(invalid("phase is unspecified or unknown"));
    }
    Ok(key)
}

impl Journal {
    /// Keep `events`: all of them, or none when one is refused.
    pub(crate) fn record(&mut self, events: Vec<ActionEvent>) -> Result<(), Refusal> {
        if events.is_empty() {
            return Err(Refusal::Invalid("give at least one event".to_owned()));
        }
        if events.len() > MAX_EVENTS_PER_RECORD {
            return Err(Refusal::Full(format!(
                "{} events in one record; send at most {MAX_EVENTS_PER_RECORD}",
                events.len()
            )));
        }
        let keys = events
            .iter()
            .enumerate()
            .map(|(i, e)| check(i, e))
            .collect::<Result<Vec<_>, _>>()?;
        let new_actions = keys
            .iter()
            .filter(|k| !self.actions.contains_key(*k))
            .collect::<std::collections::HashSet<_>>()
            .len();
        if self.actions.len() + new_actions > MAX_ACTIONS {
            return Err(Refusal::Full(format!(
                "the sandbox keeps events for at most {MAX_ACTIONS} actions"
            )));
        }
        for (key, event) in keys.into_iter().zip(events) {
            let phases = self
                .actions
                .entry(key)
                .or_default()
                .entry(event.attempt)
                .or_default();
            let slot = phases.entry(event.phase.to_i32());
            match slot {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(event);
                }
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    if event.version >= o.get().version {
                        o.insert(event);
                    }
                }
            }
        }
        Ok(())
    }

    /// The details of `id` as its events tell them, if any arrived.
    pub(crate) fn details(&self, id: &ActionIdentifier) -> Option<workflow::ActionDetails> {
        let attempts = self.actions.get(&key_of(id)?)?;
        let history: Vec<workflow::ActionAttempt> = attempts
            .iter()
            .filter_map(|(number, phases)| attempt(*number, phases))
            .collect();
        let last = history.last()?;
        let first = history.first()?;
        let run = id.run.as_option().cloned().unwrap_or_default();
        let latest = attempts.values().next_back().and_then(|p| newest(p))?;
        let result = latest
            .error_info
            .as_option()
            .filter(|_| phase_of(latest) == ActionPhase::Failed)
            .map(|e| e.clone().into());
        Some(workflow::ActionDetails {
            id: MessageField::some(ActionIdentifier {
                run: MessageField::some(RunIdentifier { ..run }),
                name: id.name.clone(),
                ..Default::default()
            }),
            status: MessageField::some(workflow::ActionStatus {
                phase: last.phase,
                attempts: last.attempt,
                start_time: first.start_time.clone(),
                end_time: last.end_time.clone(),
                cache_status: last.cache_status,
                ..Default::default()
            }),
            result,
            attempts: history,
            ..Default::default()
        })
    }
}

fn phase_of(event: &ActionEvent) -> ActionPhase {
    event.phase.as_known().unwrap_or(ActionPhase::Unspecified)
}

fn is_terminal(phase: ActionPhase) -> bool {
    matches!(
        phase,
        ActionPhase::Succeeded | ActionPhase::Failed | ActionPhase::Aborted | ActionPhase::TimedOut
    )
}

fn time_key(event: &ActionEvent) -> (i64, i32) {
    event
        .updated_time
        .as_option()
        .map_or((0, 0), |t| (t.seconds, t.nanos))
}

/// The event an attempt is at: a terminal one wins (events may arrive out of order), then the
/// latest, then the later phase.
fn newest(phases: &BTreeMap<i32, ActionEvent>) -> Option<&ActionEvent> {
    phases
        .values()
        .max_by_key(|e| (is_terminal(phase_of(e)), time_key(e), e.phase.to_i32()))
}

fn attempt(number: u32, phases: &BTreeMap<i32, ActionEvent>) -> Option<workflow::ActionAttempt> {
    let now = newest(phases)?;
    let started = phases.values().min_by_key(|e| time_key(e))?;
    let phase = phase_of(now);
    Some(workflow::ActionAttempt {
        phase: phase.into(),
        start_time: started.updated_time.clone(),
        end_time: if is_terminal(phase) {
            now.updated_time.clone()
        } else {
            MessageField::none()
        },
        error_info: now.error_info.clone(),
        attempt: number,
        log_info: now.log_info.clone(),
        outputs: now.outputs.clone(),
        cache_status: now.cache_status,
        cluster: now.cluster.clone(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use buffa_types::google::protobuf::Timestamp;

    use super::*;

    fn event(action: &str, attempt: u32, phase: ActionPhase, version: u32, at: i64) -> ActionEvent {
        ActionEvent {
            id: MessageField::some(ActionIdentifier {
                run: MessageField::some(RunIdentifier {
                    project: "flytesnacks".to_owned(),
                    domain: "development".to_owned(),
                    name: "train".to_owned(),
                    ..Default::default()
                }),
                name: action.to_owned(),
                ..Default::default()
            }),
            attempt,
            phase: phase.into(),
            version,
            updated_time: MessageField::some(Timestamp {
                seconds: at,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn id(action: &str) -> ActionIdentifier {
        event(action, 1, ActionPhase::Queued, 0, 0)
            .id
            .as_option()
            .unwrap()
            .clone()
    }

    /// An action's phase, attempts, and each attempt's phase.
    type Summary = (ActionPhase, u32, Vec<ActionPhase>);

    fn summary(journal: &Journal, action: &str) -> Option<Summary> {
        journal.details(&id(action)).map(|d| {
            let status = d.status.as_option().unwrap();
            (
                status.phase.as_known().unwrap(),
                status.attempts,
                d.attempts
                    .iter()
                    .map(|a| a.phase.as_known().unwrap())
                    .collect(),
            )
        })
    }

    #[test]
    fn events_fold_into_action_details() {
        const QUEUED: ActionPhase = ActionPhase::Queued;
        const RUNNING: ActionPhase = ActionPhase::Running;
        const FAILED: ActionPhase = ActionPhase::Failed;
        const SUCCEEDED: ActionPhase = ActionPhase::Succeeded;
        let cases: Vec<(&str, Vec<ActionEvent>, Summary)> = vec![
            (
                "in order",
                vec![
                    event("a0", 1, QUEUED, 0, 10),
                    event("a0", 1, RUNNING, 0, 11),
                    event("a0", 1, SUCCEEDED, 0, 12),
                ],
                (SUCCEEDED, 1, vec![SUCCEEDED]),
            ),
            (
                "out of order and repeated",
                vec![
                    event("a0", 1, SUCCEEDED, 0, 12),
                    event("a0", 1, RUNNING, 0, 11),
                    event("a0", 1, RUNNING, 0, 11),
                    event("a0", 1, QUEUED, 0, 10),
                ],
                (SUCCEEDED, 1, vec![SUCCEEDED]),
            ),
            (
                "retried",
                vec![
                    event("a0", 1, RUNNING, 0, 10),
                    event("a0", 1, FAILED, 0, 11),
                    event("a0", 2, RUNNING, 0, 12),
                ],
                (RUNNING, 2, vec![FAILED, RUNNING]),
            ),
        ];
        for (name, events, want) in cases {
            let mut journal = Journal::default();
            for event in events {
                journal.record(vec![event]).unwrap();
            }
            assert_eq!(summary(&journal, "a0"), Some(want), "{name}");
        }
    }

    #[test]
    fn the_newest_version_of_a_phase_is_kept_and_a_failure_is_the_result() {
        let mut journal = Journal::default();
        let mut early = event("a0", 1, ActionPhase::Failed, 1, 20);
        early.error_info = MessageField::some(workflow::ErrorInfo {
            message: "old".to_owned(),
            ..Default::default()
        });
        let mut late = early.clone();
        late.version = 2;
        late.error_info.as_option_mut().unwrap().message = "exit 7".to_owned();
        journal.record(vec![late, early]).unwrap();
        let details = journal.details(&id("a0")).unwrap();
        let workflow::action_details::Result::ErrorInfo(error) = details.result.unwrap() else {
            panic!("a failed action's result is its error");
        };
        assert_eq!(error.message, "exit 7");
    }

    #[test]
    fn bad_events_are_refused_and_nothing_of_the_record_is_kept() {
        let mut no_id = event("a0", 1, ActionPhase::Queued, 0, 1);
        no_id.id = MessageField::none();
        let mut no_run_name = event("a0", 1, ActionPhase::Queued, 0, 1);
        no_run_name
            .id
            .as_option_mut()
            .unwrap()
            .run
            .as_option_mut()
            .unwrap()
            .name = String::new();
        let cases = [
            (
                vec![],
                Refusal::Invalid("give at least one event".to_owned()),
            ),
            (
                vec![event("a0", 1, ActionPhase::Queued, 0, 1), no_id],
                Refusal::Invalid("events[1]: give id (run and action name)".to_owned()),
            ),
            (
                vec![no_run_name],
                Refusal::Invalid("events[0]: id.run.name is empty".to_owned()),
            ),
            (
                vec![event("", 1, ActionPhase::Queued, 0, 1)],
                Refusal::Invalid("events[0]: id.name is empty".to_owned()),
            ),
            (
                vec![event("a0", 0, ActionPhase::Queued, 0, 1)],
                Refusal::Invalid("events[0]: attempt must be at least 1".to_owned()),
            ),
            (
                vec![event("a0", 1, ActionPhase::Unspecified, 0, 1)],
                Refusal::Invalid("events[0]: phase is unspecified or unknown".to_owned()),
            ),
            (
                vec![event("a0", MAX_ATTEMPTS + 1, ActionPhase::Queued, 0, 1)],
                Refusal::Full(format!(
                    "events[0]: attempt {} is past the sandbox's limit of {MAX_ATTEMPTS}",
                    MAX_ATTEMPTS + 1
                )),
            ),
            (
                vec![event("a0", 1, ActionPhase::Queued, 0, 1); MAX_EVENTS_PER_RECORD + 1],
                Refusal::Full(format!(
                    "{} events in one record; send at most {MAX_EVENTS_PER_RECORD}",
                    MAX_EVENTS_PER_RECORD + 1
                )),
            ),
        ];
        for (events, want) in cases {
            let mut journal = Journal::default();
            assert_eq!(journal.record(events), Err(want.clone()), "{want:?}");
            assert_eq!(summary(&journal, "a0"), None, "{want:?}: nothing kept");
        }
    }

    #[test]
    fn the_number_of_actions_is_bounded() {
        let mut journal = Journal::default();
        for i in 0..MAX_ACTIONS {
            journal
                .record(vec![event(&format!("a{i}"), 1, ActionPhase::Queued, 0, 1)])
                .unwrap();
        }
        // A known action still takes events; a new one is refused.
        journal
            .record(vec![event("a0", 1, ActionPhase::Running, 0, 2)])
            .unwrap();
        assert_eq!(
            journal.record(vec![event("one-more", 1, ActionPhase::Queued, 0, 1)]),
            Err(Refusal::Full(format!(
                "the sandbox keeps events for at most {MAX_ACTIONS} actions"
            )))
        );
        assert_eq!(summary(&journal, "a0").unwrap().0, ActionPhase::Running);
    }
}
