//! Where action events go. Flyte's executor sends every phase an action enters to the control
//! plane's `flyteidl2.workflow.EventsProxyService/Record` (its `eventsServiceURL`); the control
//! plane builds runs' and actions' state from them. [`ConnectSink`] does the same over any
//! Connect transport (Flyte's events proxy, or flyte-run's sandbox); [`LogSink`], the default,
//! writes one log line per event.
//!
//! Delivery is at least once: an event whose pass fails later (a status write conflicts) is sent
//! again on the next pass, and receivers deduplicate (Flyte's by `ON CONFLICT DO NOTHING`).

use std::future::Future;
use std::pin::Pin;

use buffa::MessageField;
use flyte_idl::flyteidl2::common::{self, ActionIdentifier, RunIdentifier};
use flyte_idl::flyteidl2::core::TaskLog;
use flyte_idl::flyteidl2::task::OutputReferences;
use flyte_idl::flyteidl2::workflow::{self, EventsProxyServiceClient, RecordRequest, error_info};
use flyte_reconciler_core as core;
use tracing::info;

/// What [`EventSink::record`] returns: delivered, or why not (the pass is then retried).
pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where action events go.
pub trait EventSink: Send + Sync {
    /// Deliver one event; an error stops the pass before the status is written, and the pass
    /// is tried again.
    fn record<'a>(&'a self, event: &'a core::ActionEvent) -> Delivery<'a>;
}

/// The default sink: one log line per event.
#[derive(Debug, Default)]
pub struct LogSink;

impl EventSink for LogSink {
    fn record<'a>(&'a self, event: &'a core::ActionEvent) -> Delivery<'a> {
        info!(
            run = %event.id.run.name,
            action = %event.id.name,
            attempt = event.attempt,
            phase = %event.phase,
            "action event"
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Events sent to a service speaking Flyte's `EventsProxyService` over Connect, one `Record`
/// call per event (the caller waits for it: an event is delivered before the status that
/// follows it is written).
pub struct ConnectSink<T> {
    client: EventsProxyServiceClient<T>,
    /// For messages: where the events go.
    target: String,
}

impl<T> std::fmt::Debug for ConnectSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl<T> ConnectSink<T> {
    /// Events through `client`; `target` names the receiver in errors (no credentials in it).
    pub fn new(client: EventsProxyServiceClient<T>, target: impl Into<String>) -> Self {
        Self {
            client,
            target: target.into(),
        }
    }
}

impl<T> ConnectSink<T>
where
    T: connectrpc::client::ClientTransport + Send + Sync,
    T::ResponseBody: Send,
    <T::ResponseBody as connectrpc::http_body::Body>::Error: std::fmt::Display,
{
    /// Whether the receiver is there, serves the events service and takes our credential,
    /// without recording anything: an empty `Record` is refused as invalid by a receiver that
    /// got that far (Flyte's checks `min_items = 1`).
    ///
    /// # Errors
    /// The receiver's answer when it is anything else (unreachable, unauthenticated, not an
    /// events service), naming the target.
    pub async fn probe(&self) -> Result<(), String> {
        match self.client.record(RecordRequest::default()).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == connectrpc::ErrorCode::InvalidArgument => Ok(()),
            Err(e) => Err(format!(
                "{} does not take action events: {}",
                self.target,
                brief(&e.to_string())
            )),
        }
    }
}

impl<T> EventSink for ConnectSink<T>
where
    T: connectrpc::client::ClientTransport + Send + Sync,
    T::ResponseBody: Send,
    <T::ResponseBody as connectrpc::http_body::Body>::Error: std::fmt::Display,
{
    fn record<'a>(&'a self, event: &'a core::ActionEvent) -> Delivery<'a> {
        Box::pin(async move {
            let request = RecordRequest {
                events: vec![to_proto(event, std::time::SystemTime::now())],
                ..Default::default()
            };
            self.client.record(request).await.map(drop).map_err(|e| {
                format!(
                    "cannot send the action event to {}: {}",
                    self.target,
                    brief(&e.to_string())
                )
            })
        })
    }
}

/// The first line of an error, at most 300 characters (a web server's answer may be a page).
fn brief(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// `event` as Flyte's executor sends it (`buildActionEvent`), reported at `now`.
#[must_use]
pub fn to_proto(event: &core::ActionEvent, now: std::time::SystemTime) -> workflow::ActionEvent {
    let updated_time = timestamp(event.updated_at.as_millis());
    let reported = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    workflow::ActionEvent {
        id: MessageField::some(ActionIdentifier {
            run: MessageField::some(RunIdentifier {
                project: event.id.run.project.clone(),
                domain: event.id.run.domain.clone(),
                name: event.id.run.name.clone(),
                ..Default::default()
            }),
            name: event.id.name.clone(),
            ..Default::default()
        }),
        // Flyte's rule: an attempt that was never counted is the first.
        attempt: event.attempt.max(1),
        phase: phase(event.phase).into(),
        version: event.version,
        updated_time: MessageField::some(updated_time),
        error_info: event.error.as_ref().map(error).into(),
        log_info: event
            .log_links
            .iter()
            .map(|link| TaskLog {
                name: link.name.clone(),
                uri: link.uri.clone(),
                ..Default::default()
            })
            .collect(),
        outputs: event
            .outputs_uri
            .as_ref()
            .map(|uri| OutputReferences {
                output_uri: uri.clone(),
                ..Default::default()
            })
            .into(),
        cache_status: buffa::EnumValue::from(crate::crd::cache_status_number(event.cache_status)),
        reported_time: MessageField::some(buffa_types::google::protobuf::Timestamp {
            seconds: i64::try_from(reported.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(reported.subsec_nanos()).unwrap_or(0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn timestamp(millis: i64) -> buffa_types::google::protobuf::Timestamp {
    buffa_types::google::protobuf::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        ..Default::default()
    }
}

fn phase(phase: core::ActionPhase) -> common::ActionPhase {
    match phase {
        core::ActionPhase::Queued => common::ActionPhase::Queued,
        core::ActionPhase::WaitingForResources => common::ActionPhase::WaitingForResources,
        core::ActionPhase::Initializing => common::ActionPhase::Initializing,
        core::ActionPhase::Running => common::ActionPhase::Running,
        core::ActionPhase::Succeeded => common::ActionPhase::Succeeded,
        core::ActionPhase::Failed => common::ActionPhase::Failed,
        core::ActionPhase::Aborted => common::ActionPhase::Aborted,
        core::ActionPhase::TimedOut => common::ActionPhase::TimedOut,
    }
}

fn error(error: &core::ExecutionError) -> workflow::ErrorInfo {
    workflow::ErrorInfo {
        message: error.message.clone(),
        kind: match error.kind {
            core::ErrorKind::User => error_info::Kind::User,
            core::ErrorKind::System => error_info::Kind::System,
        }
        .into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use flyte_idl::flyteidl2::core::CatalogCacheStatus;

    use super::*;

    fn event(phase: core::ActionPhase) -> core::ActionEvent {
        core::ActionEvent {
            id: core::ActionId {
                run: core::RunId {
                    project: "flytesnacks".to_owned(),
                    domain: "development".to_owned(),
                    name: "train".to_owned(),
                },
                name: "a0".to_owned(),
            },
            attempt: 0,
            phase,
            version: 2,
            updated_at: core::Timestamp::from_millis(1_700_000_000_250),
            error: None,
            outputs_uri: None,
            log_links: vec![],
            cache_status: core::CacheStatus::Hit,
        }
    }

    #[test]
    fn events_carry_flytes_fields() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_hours(500_000);
        let mut failed = event(core::ActionPhase::Failed);
        failed.attempt = 2;
        failed.error = Some(core::ExecutionError::new(
            core::ErrorKind::System,
            "OOMKilled",
            "the task ran out of memory",
        ));
        failed.outputs_uri = Some("s3://bucket/outputs.pb".to_owned());
        failed.log_links = vec![core::LogLink {
            name: "VS Code".to_owned(),
            uri: "http://localhost/ide".to_owned(),
        }];
        let cases = [
            (
                event(core::ActionPhase::Running),
                1,
                "ACTION_PHASE_RUNNING",
                None,
            ),
            (
                failed,
                2,
                "ACTION_PHASE_FAILED",
                Some(("the task ran out of memory", error_info::Kind::System)),
            ),
        ];
        for (input, attempt, phase_name, error) in cases {
            let proto = to_proto(&input, now);
            let id = proto.id.as_option().unwrap();
            assert_eq!(
                (id.run.as_option().unwrap().name.as_str(), id.name.as_str()),
                ("train", "a0")
            );
            assert_eq!(proto.attempt, attempt, "attempt 0 is reported as 1");
            assert_eq!(
                buffa::Enumeration::proto_name(&proto.phase.as_known().unwrap()),
                phase_name
            );
            assert_eq!(proto.version, 2);
            let updated = proto.updated_time.as_option().unwrap();
            assert_eq!(
                (updated.seconds, updated.nanos),
                (1_700_000_000, 250_000_000)
            );
            assert_eq!(
                proto.reported_time.as_option().unwrap().seconds,
                1_800_000_000
            );
            assert_eq!(
                proto.cache_status.as_known(),
                Some(CatalogCacheStatus::CacheHit)
            );
            assert_eq!(
                proto
                    .error_info
                    .as_option()
                    .map(|e| (e.message.as_str(), e.kind.as_known().unwrap())),
                error
            );
            if error.is_some() {
                assert_eq!(proto.log_info[0].name, "VS Code");
                assert_eq!(
                    proto.outputs.as_option().unwrap().output_uri,
                    "s3://bucket/outputs.pb"
                );
            }
        }
    }
}
