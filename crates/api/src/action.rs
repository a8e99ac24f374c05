//! What flyteidl2's actions mean to a client: whether a phase is terminal, its short name, and
//! where an action publishes its debug route.

use buffa::EnumValue;
use flyte_idl::flyteidl2::common::ActionPhase;
use flyte_idl::flyteidl2::core::TaskLog;
use flyte_idl::flyteidl2::core::task_log::LinkType;
use flyte_idl::flyteidl2::workflow::ActionDetails;

/// The client's reading of a phase: whether the action is over, and its short name.
pub trait ActionPhaseExt {
    /// Whether the action is over: its pod (and any debug server in it) is gone.
    fn is_terminal(&self) -> bool;

    /// The short name scripts and people see: `RUNNING`, `SUCCEEDED` ... A value this version
    /// does not know shows as its number.
    fn short_name(&self) -> String;
}

impl ActionPhaseExt for ActionPhase {
    fn is_terminal(&self) -> bool {
        matches!(
            *self,
            ActionPhase::Succeeded
                | ActionPhase::Failed
                | ActionPhase::Aborted
                | ActionPhase::TimedOut
                | ActionPhase::Recovered
        )
    }

    fn short_name(&self) -> String {
        let name = buffa::Enumeration::proto_name(self);
        name.strip_prefix("ACTION_PHASE_")
            .unwrap_or(name)
            .to_owned()
    }
}

impl ActionPhaseExt for EnumValue<ActionPhase> {
    fn is_terminal(&self) -> bool {
        self.as_known().is_some_and(|p| p.is_terminal())
    }

    fn short_name(&self) -> String {
        self.as_known()
            .map_or_else(|| self.to_i32().to_string(), |p| p.short_name())
    }
}

/// Where an action publishes what a client connects to.
pub trait ActionDetailsExt {
    /// The debug route: an IDE link with a uri from the latest attempt that has one (an older
    /// attempt's pod is gone), preferring a link marked ready but accepting one that is not
    /// (ready never turns true for raw SSH), as Flyte's client does within an attempt.
    fn ide_link(&self) -> Option<&TaskLog>;
}

impl ActionDetailsExt for ActionDetails {
    fn ide_link(&self) -> Option<&TaskLog> {
        let ide = |l: &&TaskLog| l.link_type == LinkType::Ide && !l.uri.is_empty();
        let attempt = self
            .attempts
            .iter()
            .rev()
            .find(|a| a.log_info.iter().any(|l| ide(&l)))?;
        let mut links = attempt.log_info.iter().filter(ide);
        let first = links.clone().next();
        links.find(|l| l.ready).or(first)
    }
}

#[cfg(test)]
mod tests {
    use flyte_idl::flyteidl2::workflow::ActionAttempt;

    use super::*;

    #[test]
    fn phases_read_as_a_client_reads_them() {
        // (phase number, terminal, short name)
        let cases = [
            (0, false, "UNSPECIFIED"),
            (1, false, "QUEUED"),
            (2, false, "WAITING_FOR_RESOURCES"),
            (4, false, "RUNNING"),
            (5, true, "SUCCEEDED"),
            (6, true, "FAILED"),
            (7, true, "ABORTED"),
            (8, true, "TIMED_OUT"),
            (9, false, "PAUSED"),
            (10, true, "RECOVERED"),
            (42, false, "42"),
        ];
        for (number, terminal, name) in cases {
            let phase = EnumValue::<ActionPhase>::from(number);
            assert_eq!(phase.is_terminal(), terminal, "{number}");
            assert_eq!(phase.short_name(), name, "{number}");
        }
    }

    #[test]
    fn the_ide_link_prefers_ready_and_the_latest_attempt() {
        let link = |uri: &str, link_type: LinkType, ready: bool| TaskLog {
            uri: uri.into(),
            link_type: link_type.into(),
            ready,
            ..TaskLog::default()
        };
        let details = ActionDetails {
            attempts: vec![
                ActionAttempt {
                    log_info: vec![link("old-ide", LinkType::Ide, true)],
                    ..Default::default()
                },
                ActionAttempt {
                    log_info: vec![
                        link("logs", LinkType::External, true),
                        link("", LinkType::Ide, true),
                        link("new-ide", LinkType::Ide, false),
                    ],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        // The latest attempt's link, though not ready: the old attempt's pod is gone.
        assert_eq!(details.ide_link().unwrap().uri, "new-ide");
        let mut both = details.clone();
        both.attempts[1]
            .log_info
            .push(link("ready-ide", LinkType::Ide, true));
        assert_eq!(
            both.ide_link().unwrap().uri,
            "ready-ide",
            "within an attempt a ready link wins"
        );
        assert!(ActionDetails::default().ide_link().is_none());
    }
}
