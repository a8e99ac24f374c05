//! The Connect services the sandbox serves, on the connectrpc runtime with the generated
//! flyteidl2 types (flyte-idl): binary protobuf and JSON, gzip, unary and server streams, Connect
//! errors (`unimplemented` for every method the sandbox does not serve), size limits.
//!
//! The run model inside the sandbox is made of the same generated types, so a field the schema
//! does not define cannot reach a client.

// The generated traits return `impl Future`; `async fn` refines that, as connectrpc documents.
#![allow(refining_impl_trait)]

use std::sync::Arc;

use buffa::MessageField;
use connectrpc::{
    ConnectError, ErrorCode, RequestContext, Response, ServiceRequest, ServiceResult, ServiceStream,
};
use flyte_api::ActionPhaseExt;
use flyte_idl::flyteidl2::{auth, cluster, common, dataproxy, project, workflow};

use crate::Shared;
use crate::server::{Rejection, authenticate, decode_run, run_slot};

impl From<Rejection> for ConnectError {
    fn from(rejection: Rejection) -> Self {
        let code = rejection
            .code
            .as_str()
            .parse()
            .unwrap_or(ErrorCode::Internal);
        ConnectError::new(code, rejection.message)
    }
}

impl From<crate::SandboxError> for ConnectError {
    fn from(error: crate::SandboxError) -> Self {
        Rejection::from(error).into()
    }
}

fn not_served(method: &str) -> ConnectError {
    ConnectError::unimplemented(format!("the flyte-run sandbox does not serve {method}"))
}

/// The services, each holding the sandbox's shared state.
#[derive(Clone)]
pub(crate) struct Api {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

/// Every Connect service of the sandbox on one router. Paths it does not know answer
/// `unimplemented` (HTTP 404), as Connect servers do.
pub(crate) fn router(shared: Arc<Shared>) -> connectrpc::Router {
    let api = Arc::new(Api { shared });
    let router = connectrpc::Router::new();
    let router = <Api as auth::AuthMetadataServiceExt>::register(Arc::clone(&api), router);
    let router = <Api as cluster::ClusterServiceExt>::register(Arc::clone(&api), router);
    let router = <Api as dataproxy::DataProxyServiceExt>::register(Arc::clone(&api), router);
    let router = <Api as project::ProjectServiceExt>::register(Arc::clone(&api), router);
    let router = <Api as workflow::RunServiceExt>::register(Arc::clone(&api), router);
    let router = <Api as workflow::RunLogsServiceExt>::register(Arc::clone(&api), router);
    let router = <Api as workflow::EventsProxyServiceExt>::register(Arc::clone(&api), router);
    crate::own_services::register(Arc::clone(&api.shared), router)
}

impl Api {
    fn caller(&self, ctx: &RequestContext) -> Result<String, ConnectError> {
        authenticate(&self.shared, ctx.headers()).map_err(ConnectError::from)
    }

    fn slot(
        &self,
        run: Option<&flyte_idl::flyteidl2::common::RunIdentifier>,
    ) -> Result<Arc<crate::runs::RunSlot>, ConnectError> {
        let run = run.ok_or_else(|| ConnectError::invalid_argument("give runId"))?;
        run_slot(&self.shared, run).map_err(ConnectError::from)
    }

    fn action_slot(
        &self,
        action: Option<&flyte_idl::flyteidl2::common::ActionIdentifier>,
    ) -> Result<Arc<crate::runs::RunSlot>, ConnectError> {
        let action = action.ok_or_else(|| ConnectError::invalid_argument("give actionId"))?;
        let slot = self.slot(action.run.as_option())?;
        if action.name != crate::runs::ACTION_NAME {
            return Err(ConnectError::not_found(format!(
                "no action {:?} in that run",
                action.name
            )));
        }
        Ok(slot)
    }
}

impl Api {
    /// The task log of an action the caller may see, followed until the action ends, each batch
    /// of lines as `message` wraps it (the run-logs and data-proxy services differ only there).
    fn tail_action<T: Send + 'static>(
        &self,
        ctx: &RequestContext,
        action: Option<&flyte_idl::flyteidl2::common::ActionIdentifier>,
        message: fn(Vec<String>) -> T,
    ) -> ServiceResult<ServiceStream<T>> {
        self.caller(ctx)?;
        let slot = self.action_slot(action)?;
        let path = crate::server::log_path(&self.shared, &slot.lock().id);
        Ok(Response::new(tail(slot, path, message)))
    }
}

/// The reason an abort records: the caller's, else a default.
fn abort_reason(reason: Option<String>) -> String {
    reason
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "aborted by request".to_owned())
}

/// A run as the list and watch calls show it: its one action's id and status.
fn run_summary(details: &workflow::ActionDetails) -> workflow::Run {
    workflow::Run {
        action: MessageField::some(action_summary(details)),
        ..Default::default()
    }
}

/// An action as the list and watch calls show it: its id and status.
fn action_summary(details: &workflow::ActionDetails) -> workflow::Action {
    workflow::Action {
        id: details.id.clone(),
        status: details.status.clone(),
        ..Default::default()
    }
}

/// A run's details as `GetRunDetails` and `WatchRunDetails` show them.
fn run_details(action: workflow::ActionDetails) -> workflow::RunDetails {
    workflow::RunDetails {
        action: MessageField::some(action),
        ..Default::default()
    }
}

/// The project and domain a list or watch covers: the one named, else the sandbox's default.
fn scope(project: Option<&common::ProjectIdentifier>) -> (String, String) {
    project.map_or_else(
        || {
            (
                crate::DEFAULT_PROJECT.to_owned(),
                crate::DEFAULT_DOMAINS[0].to_owned(),
            )
        },
        |p| (p.name.clone(), p.domain.clone()),
    )
}

/// The scope of a `ListRunsRequest`.
fn list_scope(
    scope_by: Option<&workflow::list_runs_request::ScopeBy>,
) -> Result<(String, String), ConnectError> {
    match scope_by {
        None => Ok(scope(None)),
        Some(workflow::list_runs_request::ScopeBy::ProjectId(p)) => Ok(scope(Some(p))),
        Some(_) => Err(ConnectError::invalid_argument(
            "the sandbox lists runs by projectId (or, given none, its default project)",
        )),
    }
}

/// The runs of one project and domain: all of them first, then each run whose summary changed
/// (a new run, a new phase), as long as the caller listens. A quiet stretch of about 10 s sends
/// an empty message, so a client that drops silent streams keeps watching.
fn watch_runs(
    shared: Arc<Shared>,
    project: String,
    domain: String,
) -> ServiceStream<workflow::WatchRunsResponse> {
    let seen: std::collections::HashMap<String, workflow::Run> = std::collections::HashMap::new();
    Box::pin(futures_util::stream::unfold(
        (shared, seen, true),
        move |(shared, mut seen, first)| {
            let (project, domain) = (project.clone(), domain.clone());
            async move {
                let mut quiet_polls = 0;
                loop {
                    let mut changed = Vec::new();
                    for slot in shared.runs.list(&project, &domain) {
                        let details = slot.lock().details();
                        let name = details
                            .id
                            .as_option()
                            .and_then(|id| id.run.as_option())
                            .map(|run| run.name.clone())
                            .unwrap_or_default();
                        let run = run_summary(&details);
                        if seen.get(&name) != Some(&run) {
                            seen.insert(name, run.clone());
                            changed.push(run);
                        }
                    }
                    quiet_polls += 1;
                    if first || !changed.is_empty() || quiet_polls >= HEARTBEAT_POLLS {
                        let message = workflow::WatchRunsResponse {
                            runs: changed,
                            ..Default::default()
                        };
                        return Some((Ok(message), (shared, seen, false)));
                    }
                    tokio::time::sleep(crate::server::WATCH_POLL).await;
                }
            }
        },
    ))
}

/// Each change of a run's details, mapped by `message`, until the first terminal phase.
fn watch<T: Send + 'static>(
    slot: Arc<crate::runs::RunSlot>,
    message: impl Fn(&workflow::ActionDetails) -> Result<T, ConnectError> + Send + 'static,
) -> ServiceStream<T> {
    let stream = futures_util::stream::unfold(
        (slot, None::<workflow::ActionDetails>, false, message),
        |(slot, last, ended, message)| async move {
            if ended {
                return None;
            }
            let mut quiet_polls = 0;
            loop {
                let details = slot.lock().details();
                quiet_polls += 1;
                // Unchanged details are sent again after about 10 s of quiet: a client that
                // drops a silent stream (Flyte's CLI does, for logs) keeps watching.
                if last.as_ref() != Some(&details) || quiet_polls >= HEARTBEAT_POLLS {
                    let terminal = details.status.phase.is_terminal();
                    let item = message(&details);
                    let ended = terminal || item.is_err();
                    return Some((item, (slot, Some(details), ended, message)));
                }
                tokio::time::sleep(crate::server::WATCH_POLL).await;
            }
        },
    );
    Box::pin(stream)
}

impl auth::AuthMetadataService for Api {
    async fn get_o_auth2_metadata(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, auth::GetOAuth2MetadataRequest>,
    ) -> ServiceResult<auth::GetOAuth2MetadataResponse> {
        // Plain http on loopback even for TLS callers: Flyte 2.12.1's token client does not use
        // `caCertFilePath` (it builds an SSL context from it and then drops it), so it could
        // not verify the sandbox's CA at an https token endpoint.
        Response::ok(auth::GetOAuth2MetadataResponse {
            issuer: crate::ISSUER.to_owned(),
            token_endpoint: format!("{}/oauth2/token", self.shared.base_url),
            authorization_endpoint: format!(
                "{}{}",
                self.shared.base_url,
                crate::server::AUTHORIZATION_PATH
            ),
            response_types_supported: vec!["code".to_owned()],
            code_challenge_methods_supported: vec!["S256".to_owned()],
            device_authorization_endpoint: format!(
                "{}{}",
                self.shared.base_url,
                crate::server::DEVICE_AUTHORIZATION_PATH
            ),
            grant_types_supported: crate::server::GRANT_TYPES
                .iter()
                .map(|g| (*g).to_owned())
                .collect(),
            token_endpoint_auth_methods_supported: vec!["client_secret_basic".to_owned()],
            ..Default::default()
        })
    }

    async fn get_public_client_config(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, auth::GetPublicClientConfigRequest>,
    ) -> ServiceResult<auth::GetPublicClientConfigResponse> {
        Response::ok(auth::GetPublicClientConfigResponse {
            client_id: crate::PUBLIC_CLIENT_ID.to_owned(),
            redirect_uri: self.shared.redirect_uri.clone(),
            authorization_metadata_key: "authorization".to_owned(),
            ..Default::default()
        })
    }
}

impl cluster::ClusterService for Api {
    async fn select_cluster(
        &self,
        ctx: RequestContext,
        _request: ServiceRequest<'_, cluster::SelectClusterRequest>,
    ) -> ServiceResult<cluster::SelectClusterResponse> {
        // One machine, one cluster: an empty endpoint tells Flyte's client to stay here.
        self.caller(&ctx)?;
        Response::ok(cluster::SelectClusterResponse::default())
    }
}

/// The projects the sandbox knows: the default one, and every project a run was made in, each
/// with the domains its runs use (Flyte's three by default).
fn projects(shared: &Shared) -> Vec<project::Project> {
    let mut known: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    known.insert(
        crate::DEFAULT_PROJECT.to_owned(),
        crate::DEFAULT_DOMAINS
            .iter()
            .map(|d| (*d).to_owned())
            .collect(),
    );
    for (project, domain) in shared.runs.projects() {
        known.entry(project).or_default().insert(domain);
    }
    known
        .into_iter()
        .map(|(id, domains)| project::Project {
            name: id.clone(),
            id,
            domains: domains
                .into_iter()
                .map(|d| project::Domain {
                    id: d.clone(),
                    name: d,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

impl project::ProjectService for Api {
    async fn create_project(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, project::CreateProjectRequest>,
    ) -> ServiceResult<project::CreateProjectResponse> {
        Err(not_served(
            "CreateProject (projects exist once a run uses them)",
        ))
    }

    async fn update_project(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, project::UpdateProjectRequest>,
    ) -> ServiceResult<project::UpdateProjectResponse> {
        Err(not_served("UpdateProject"))
    }

    async fn get_project(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, project::GetProjectRequest>,
    ) -> ServiceResult<project::GetProjectResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let wanted = request.id;
        let found = projects(&self.shared)
            .into_iter()
            .find(|p| p.id == wanted)
            .ok_or_else(|| ConnectError::not_found(format!("no project {wanted:?}")))?;
        Response::ok(project::GetProjectResponse {
            project: buffa::MessageField::some(found),
            ..Default::default()
        })
    }

    async fn list_projects(
        &self,
        ctx: RequestContext,
        _request: ServiceRequest<'_, project::ListProjectsRequest>,
    ) -> ServiceResult<project::ListProjectsResponse> {
        self.caller(&ctx)?;
        Response::ok(project::ListProjectsResponse {
            projects: buffa::MessageField::some(project::Projects {
                projects: projects(&self.shared),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

/// Lines per `TailLogsResponse`: a long log arrives in several messages, none of them large
/// (at most `LINES_PER_MESSAGE` x `MAX_LINE_BYTES`, 2 MiB, under the 4 MiB message limit).
const LINES_PER_MESSAGE: usize = 500;
/// A longer line is cut into lines of this size.
const MAX_LINE_BYTES: usize = 4 * 1024;

struct Tail {
    slot: Arc<crate::runs::RunSlot>,
    path: std::path::PathBuf,
    offset: u64,
    partial: Vec<u8>,
    done: bool,
    idle_polls: u32,
}

/// Polls without a line before an empty message is sent (about 10 s).
const HEARTBEAT_POLLS: u32 = 100;

/// The task's output (stdout and stderr, as the sandbox writes them to its log), line by line,
/// following the file until the run ends.
fn tail<T: Send + 'static>(
    slot: Arc<crate::runs::RunSlot>,
    path: std::path::PathBuf,
    logs_message: fn(Vec<String>) -> T,
) -> ServiceStream<T> {
    let start = Tail {
        slot,
        path,
        offset: 0,
        partial: Vec::new(),
        done: false,
        idle_polls: 0,
    };
    Box::pin(futures_util::stream::unfold(
        start,
        move |mut tail| async move {
            if tail.done {
                return None;
            }
            loop {
                // Read the phase before the file: lines written before the end are then seen.
                let ended = tail.slot.lock().phase.is_terminal();
                let lines = match read_lines(&tail.path, &mut tail.offset, &mut tail.partial).await
                {
                    Ok(lines) => lines,
                    Err(error) => {
                        tail.done = true;
                        tracing::error!(%error, path = %tail.path.display(), "cannot read a task log");
                        return Some((
                            Err(ConnectError::internal("cannot read the task's log")),
                            tail,
                        ));
                    }
                };
                if ended && lines.len() < LINES_PER_MESSAGE {
                    if !tail.partial.is_empty() {
                        let rest = std::mem::take(&mut tail.partial);
                        let mut lines = lines;
                        lines.push(String::from_utf8_lossy(&rest).into_owned());
                        tail.done = true;
                        return Some((Ok(logs_message(lines)), tail));
                    }
                    tail.done = true;
                    if lines.is_empty() {
                        return None;
                    }
                    return Some((Ok(logs_message(lines)), tail));
                }
                if !lines.is_empty() {
                    tail.idle_polls = 0;
                    return Some((Ok(logs_message(lines)), tail));
                }
                // A quiet task still gets a message now and then: Flyte's CLI gives up on a stream
                // that says nothing for 30 s while the action runs (and cannot resume it).
                tail.idle_polls += 1;
                if tail.idle_polls >= HEARTBEAT_POLLS {
                    tail.idle_polls = 0;
                    return Some((Ok(logs_message(Vec::new())), tail));
                }
                tokio::time::sleep(crate::server::WATCH_POLL).await;
            }
        },
    ))
}

/// Up to [`LINES_PER_MESSAGE`] complete lines of `path` after `offset` (both advanced past
/// what was read; an unfinished line waits in `partial`).
async fn read_lines(
    path: &std::path::Path,
    offset: &mut u64,
    partial: &mut Vec<u8>,
) -> std::io::Result<Vec<String>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        // Not written yet: the task has not started.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(std::io::SeekFrom::Start(*offset)).await?;
    let mut lines = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while lines.len() < LINES_PER_MESSAGE {
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let mut consumed = 0;
        for (i, byte) in chunk[..n].iter().enumerate() {
            // A line ends at a newline, or at MAX_LINE_BYTES: a task printing without newlines
            // cannot make the sandbox hold its whole output, nor one message carry it.
            let full = partial.len() + (i - consumed) >= MAX_LINE_BYTES;
            if *byte == b'\n' || full {
                partial.extend_from_slice(&chunk[consumed..i]);
                consumed = if *byte == b'\n' { i + 1 } else { i };
                let line = std::mem::take(partial);
                lines.push(String::from_utf8_lossy(&line).into_owned());
                if lines.len() == LINES_PER_MESSAGE {
                    break;
                }
            }
        }
        if lines.len() < LINES_PER_MESSAGE {
            partial.extend_from_slice(&chunk[consumed..n]);
            consumed = n;
        }
        *offset += consumed as u64;
    }
    Ok(lines)
}

fn log_lines(lines: Vec<String>) -> Vec<flyte_idl::flyteidl2::logs::dataplane::LogLine> {
    use flyte_idl::flyteidl2::logs::dataplane::{LogLine, LogLineOriginator};
    lines
        .into_iter()
        .map(|message| LogLine {
            message,
            originator: buffa::EnumValue::from(LogLineOriginator::USER),
            ..Default::default()
        })
        .collect()
}

fn run_logs_message(lines: Vec<String>) -> workflow::TailLogsResponse {
    workflow::TailLogsResponse {
        logs: vec![workflow::tail_logs_response::Logs {
            lines: log_lines(lines),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn data_proxy_logs_message(lines: Vec<String>) -> dataproxy::TailLogsResponse {
    dataproxy::TailLogsResponse {
        logs: vec![dataproxy::tail_logs_response::Logs {
            lines: log_lines(lines),
            ..Default::default()
        }],
        ..Default::default()
    }
}

impl workflow::EventsProxyService for Api {
    async fn record(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::RecordRequest>,
    ) -> ServiceResult<workflow::RecordResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let mut journal = self
            .shared
            .journal
            .lock()
            .map_err(|_| ConnectError::internal("the event journal is unusable"))?;
        journal
            .record(request.events)
            .map_err(|refusal| match refusal {
                crate::events::Refusal::Invalid(why) => ConnectError::invalid_argument(why),
                crate::events::Refusal::Full(why) => {
                    ConnectError::new(ErrorCode::ResourceExhausted, why)
                }
            })?;
        Response::ok(workflow::RecordResponse::default())
    }
}

impl workflow::RunLogsService for Api {
    async fn tail_logs(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::TailLogsRequest>,
    ) -> ServiceResult<ServiceStream<workflow::TailLogsResponse>> {
        let request = request.to_owned_message();
        self.tail_action(&ctx, request.action_id.as_option(), run_logs_message)
    }
}

/// `flyte get logs` asks the data proxy for a task's logs; the rest of it (uploads, download
/// links) has nothing to serve on one machine.
impl dataproxy::DataProxyService for Api {
    async fn create_upload_location(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, dataproxy::CreateUploadLocationRequest>,
    ) -> ServiceResult<dataproxy::CreateUploadLocationResponse> {
        Err(not_served("CreateUploadLocation"))
    }

    async fn upload_inputs(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, dataproxy::UploadInputsRequest>,
    ) -> ServiceResult<dataproxy::UploadInputsResponse> {
        Err(not_served("UploadInputs"))
    }

    async fn create_download_link(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, dataproxy::CreateDownloadLinkRequest>,
    ) -> ServiceResult<dataproxy::CreateDownloadLinkResponse> {
        Err(not_served("CreateDownloadLink"))
    }

    async fn get_action_data(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, dataproxy::GetActionDataRequest>,
    ) -> ServiceResult<dataproxy::GetActionDataResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        self.action_slot(request.action_id.as_option())?;
        Response::ok(dataproxy::GetActionDataResponse::default())
    }

    async fn tail_logs(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, dataproxy::TailLogsRequest>,
    ) -> ServiceResult<ServiceStream<dataproxy::TailLogsResponse>> {
        let request = request.to_owned_message();
        self.tail_action(&ctx, request.action_id.as_option(), data_proxy_logs_message)
    }
}

impl workflow::RunService for Api {
    async fn create_run(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::CreateRunRequest>,
    ) -> ServiceResult<workflow::CreateRunResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let (id, task, retries) = decode_run(&request)?;
        let slot = crate::server::create_run(&self.shared, &id, &task, retries)?;
        let details = slot.lock().details();
        Response::ok(workflow::CreateRunResponse {
            run: MessageField::some(run_summary(&details)),
            ..Default::default()
        })
    }

    async fn abort_run(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::AbortRunRequest>,
    ) -> ServiceResult<workflow::AbortRunResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let slot = self.slot(request.run_id.as_option())?;
        crate::runs::abort(&slot, abort_reason(request.reason));
        Response::ok(workflow::AbortRunResponse::default())
    }

    async fn get_run_details(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::GetRunDetailsRequest>,
    ) -> ServiceResult<workflow::GetRunDetailsResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let slot = self.slot(request.run_id.as_option())?;
        let action = slot.lock().details();
        Response::ok(workflow::GetRunDetailsResponse {
            details: MessageField::some(run_details(action)),
            ..Default::default()
        })
    }

    async fn watch_run_details(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::WatchRunDetailsRequest>,
    ) -> ServiceResult<ServiceStream<workflow::WatchRunDetailsResponse>> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let slot = self.slot(request.run_id.as_option())?;
        Ok(Response::new(watch(slot, |details| {
            Ok(workflow::WatchRunDetailsResponse {
                details: MessageField::some(run_details(details.clone())),
                ..Default::default()
            })
        })))
    }

    async fn get_action_details(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::GetActionDetailsRequest>,
    ) -> ServiceResult<workflow::GetActionDetailsResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let details = match self.action_slot(request.action_id.as_option()) {
            Ok(slot) => slot.lock().details(),
            // An action an executor elsewhere reported on.
            Err(e) if e.code == ErrorCode::NotFound => request
                .action_id
                .as_option()
                .and_then(|id| self.shared.journal.lock().ok()?.details(id))
                .ok_or(e)?,
            Err(e) => return Err(e),
        };
        Response::ok(workflow::GetActionDetailsResponse {
            details: MessageField::some(details),
            ..Default::default()
        })
    }

    async fn watch_action_details(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::WatchActionDetailsRequest>,
    ) -> ServiceResult<ServiceStream<workflow::WatchActionDetailsResponse>> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let slot = self.action_slot(request.action_id.as_option())?;
        Ok(Response::new(watch(slot, |details| {
            Ok(workflow::WatchActionDetailsResponse {
                details: MessageField::some(details.clone()),
                ..Default::default()
            })
        })))
    }

    async fn get_action_data(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::GetActionDataRequest>,
    ) -> ServiceResult<workflow::GetActionDataResponse> {
        let request = request.to_owned_message();
        // Local tasks take no typed inputs and record no outputs: both are empty.
        self.caller(&ctx)?;
        self.action_slot(request.action_id.as_option())?;
        Response::ok(workflow::GetActionDataResponse::default())
    }

    async fn list_runs(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::ListRunsRequest>,
    ) -> ServiceResult<workflow::ListRunsResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let (project, domain) = list_scope(request.scope_by.as_ref())?;
        let runs = self
            .shared
            .runs
            .list(&project, &domain)
            .iter()
            .map(|slot| run_summary(&slot.lock().details()))
            .collect();
        Response::ok(workflow::ListRunsResponse {
            runs,
            ..Default::default()
        })
    }

    async fn watch_runs(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::WatchRunsRequest>,
    ) -> ServiceResult<ServiceStream<workflow::WatchRunsResponse>> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let project = match &request.target {
            None => None,
            Some(workflow::watch_runs_request::Target::ProjectId(p)) => Some((**p).clone()),
            Some(_) => {
                return Err(ConnectError::invalid_argument(
                    "the sandbox watches runs by projectId (or, given none, its default project)",
                ));
            }
        };
        let (project, domain) = scope(project.as_ref());
        Ok(Response::new(watch_runs(
            Arc::clone(&self.shared),
            project,
            domain,
        )))
    }

    async fn list_actions(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::ListActionsRequest>,
    ) -> ServiceResult<workflow::ListActionsResponse> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let slot = self.slot(request.run_id.as_option())?;
        let action = action_summary(&slot.lock().details());
        Response::ok(workflow::ListActionsResponse {
            actions: vec![action],
            ..Default::default()
        })
    }

    async fn watch_actions(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::WatchActionsRequest>,
    ) -> ServiceResult<ServiceStream<workflow::WatchActionsResponse>> {
        let request = request.to_owned_message();
        self.caller(&ctx)?;
        let slot = self.slot(request.run_id.as_option())?;
        Ok(Response::new(watch(slot, |details| {
            Ok(workflow::WatchActionsResponse {
                enriched_actions: vec![workflow::EnrichedAction {
                    action: MessageField::some(action_summary(details)),
                    meets_filter: true,
                    ..Default::default()
                }],
                ..Default::default()
            })
        })))
    }

    async fn watch_cluster_events(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, workflow::WatchClusterEventsRequest>,
    ) -> ServiceResult<ServiceStream<workflow::WatchClusterEventsResponse>> {
        Err(not_served("WatchClusterEvents"))
    }

    async fn abort_action(
        &self,
        ctx: RequestContext,
        request: ServiceRequest<'_, workflow::AbortActionRequest>,
    ) -> ServiceResult<workflow::AbortActionResponse> {
        let request = request.to_owned_message();
        // A sandbox run has one action: aborting it aborts the run.
        self.caller(&ctx)?;
        let slot = self.action_slot(request.action_id.as_option())?;
        crate::runs::abort(&slot, abort_reason(Some(request.reason)));
        Response::ok(workflow::AbortActionResponse::default())
    }

    async fn signal_event(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, workflow::SignalEventRequest>,
    ) -> ServiceResult<workflow::SignalEventResponse> {
        Err(not_served("SignalEvent"))
    }

    async fn watch_groups(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, workflow::WatchGroupsRequest>,
    ) -> ServiceResult<ServiceStream<workflow::WatchGroupsResponse>> {
        Err(not_served("WatchGroups"))
    }

    async fn get_action_data_ur_is(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, workflow::GetActionDataURIsRequest>,
    ) -> ServiceResult<workflow::GetActionDataURIsResponse> {
        Err(not_served("GetActionDataURIs"))
    }

    async fn get_action_log_context(
        &self,
        _ctx: RequestContext,
        _request: ServiceRequest<'_, workflow::GetActionLogContextRequest>,
    ) -> ServiceResult<workflow::GetActionLogContextResponse> {
        Err(not_served("GetActionLogContext"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #![allow(
        clippy::disallowed_methods,
        reason = "tests write their fixtures directly"
    )]
    use super::*;

    #[tokio::test]
    async fn log_lines_are_split_bounded_and_resumed() {
        let dir = std::env::temp_dir().join(format!("flyte-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("task.log");
        let (mut offset, mut partial) = (0u64, Vec::new());
        // Not written yet: nothing, no error.
        assert!(
            read_lines(&path, &mut offset, &mut partial)
                .await
                .unwrap()
                .is_empty()
        );
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 10);
        let many = (0..LINES_PER_MESSAGE + 3).fold(String::new(), |mut all, i| {
            use std::fmt::Write as _;
            let _ = writeln!(all, "l{i}");
            all
        });
        std::fs::write(&path, format!("one\ntwo\n{long}\n{many}unfinished")).unwrap();
        let first = read_lines(&path, &mut offset, &mut partial).await.unwrap();
        assert_eq!(first.len(), LINES_PER_MESSAGE);
        assert_eq!(&first[..2], ["one", "two"]);
        // A line with no end in sight is cut at MAX_LINE_BYTES, and nothing is lost.
        assert_eq!(first[2].len(), MAX_LINE_BYTES);
        assert_eq!(first[3].len(), MAX_LINE_BYTES);
        assert_eq!(first[4], "x".repeat(10));
        assert_eq!(first[5], "l0");
        let second = read_lines(&path, &mut offset, &mut partial).await.unwrap();
        assert_eq!(second.len(), 8, "{second:?}");
        assert_eq!(second.last().map(String::as_str), Some("l502"));
        // The unfinished line waits until its newline arrives.
        assert_eq!(partial, b"unfinished");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, b" now\n").unwrap();
        let third = read_lines(&path, &mut offset, &mut partial).await.unwrap();
        assert_eq!(third, ["unfinished now"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
