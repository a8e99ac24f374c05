//! The thin async driver: the app operations over `kube::Api<DynamicObject>`.

use futures_util::{Stream, StreamExt as _};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::watcher;
use serde_json::Value;

use crate::app::{self, AppId, AppSpec, AppStatus};
use crate::{OperatorError, Result};

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployOutcome {
    Created,
    /// Running with the same spec: nothing was sent.
    Unchanged,
    /// Replaced with the new spec (also when it was stopped: a deploy starts it again).
    Updated,
}

/// A change to an app seen by [`AppClient::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// Created or changed (also each app present when the watch starts or restarts).
    Changed(AppStatus),
    Deleted {
        kservice_name: String,
    },
}

/// One page of a listing, and the token for the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPage {
    pub apps: Vec<AppStatus>,
    pub next: Option<String>,
}

/// Apps' KServices in the `flyte` namespace.
#[derive(Clone)]
pub struct AppClient {
    api: Api<DynamicObject>,
    pods: Api<k8s_openapi::api::core::v1::Pod>,
}

impl std::fmt::Debug for AppClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppClient").finish_non_exhaustive()
    }
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            app::KSERVICE_GROUP,
            app::KSERVICE_VERSION,
            app::KSERVICE_KIND,
        ),
        app::KSERVICE_PLURAL,
    )
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

fn to_object(value: Value) -> Result<DynamicObject> {
    serde_json::from_value(value).map_err(|e| OperatorError::Encode(e.to_string()))
}

fn to_value(object: &DynamicObject) -> Result<Value> {
    serde_json::to_value(object).map_err(|e| OperatorError::Encode(e.to_string()))
}

impl AppClient {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::namespaced_with(
                client.clone(),
                flyte_kservice_naming::APP_NAMESPACE,
                &resource(),
            ),
            pods: Api::namespaced(client, flyte_kservice_naming::APP_NAMESPACE),
        }
    }

    /// Create the app's KService, or replace its spec when it changed or the app is stopped.
    pub async fn deploy(&self, app: &AppId, spec: &AppSpec) -> Result<DeployOutcome> {
        let desired = app::kservice_object(app, spec)?;
        let name = app.kservice_name()?;
        match self.api.get_opt(&name).await? {
            None => {
                self.api
                    .create(&PostParams::default(), &to_object(desired)?)
                    .await?;
                Ok(DeployOutcome::Created)
            }
            Some(existing) => {
                let existing = to_value(&existing)?;
                if let Some(reason) = app::ownership_conflict(&existing, app) {
                    return Err(OperatorError::Corrupt { name, reason });
                }
                if !app::needs_update(&existing, &desired) {
                    return Ok(DeployOutcome::Unchanged);
                }
                let merged = app::merge_for_update(&existing, &desired);
                self.api
                    .replace(&name, &PostParams::default(), &to_object(merged)?)
                    .await?;
                Ok(DeployOutcome::Updated)
            }
        }
    }

    /// Stop the app (scaled to zero, cluster-local); `false` when it does not exist.
    pub async fn stop(&self, app: &AppId) -> Result<bool> {
        let name = app.kservice_name()?;
        match self
            .api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(app::stop_patch()),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The app as the cluster has it, or `None` when it has no KService.
    pub async fn get(&self, app: &AppId) -> Result<Option<AppStatus>> {
        let name = app.kservice_name()?;
        self.api
            .get_opt(&name)
            .await?
            .map(|object| app::app_status(&to_value(&object)?))
            .transpose()
    }

    /// Apps, optionally of one project and domain; `limit` 0 means all; `token` continues a
    /// previous page.
    pub async fn list(
        &self,
        project: Option<&str>,
        domain: Option<&str>,
        limit: u32,
        token: Option<String>,
    ) -> Result<AppPage> {
        for (what, value) in [("project", project), ("domain", domain)] {
            if let Some(value) = value {
                app::check_label_value(what, value)?;
            }
        }
        let mut params = ListParams::default().labels(&app::app_selector(project, domain));
        if limit > 0 {
            params = params.limit(limit);
        }
        if let Some(token) = token {
            params = params.continue_token(&token);
        }
        let list = self.api.list(&params).await?;
        // One unreadable object does not hide the others: it is logged and left out.
        let mut apps = Vec::with_capacity(list.items.len());
        for object in &list.items {
            match to_value(object).and_then(|v| app::app_status(&v)) {
                Ok(status) => apps.push(status),
                Err(e) => tracing::warn!(error = %e, "skipping an app KService"),
            }
        }
        Ok(AppPage {
            apps,
            next: list.metadata.continue_.filter(|t| !t.is_empty()),
        })
    }

    /// The pods backing the app (see [`app::replica_selector`]); empty when it has no KService.
    pub async fn replicas(&self, app: &AppId) -> Result<Vec<app::Replica>> {
        let name = app.kservice_name()?;
        let Some(service) = self.api.get_opt(&name).await? else {
            return Ok(Vec::new());
        };
        let service = to_value(&service)?;
        let selector = app::replica_selector(&name, app::latest_ready_revision(&service));
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await?;
        pods.items
            .iter()
            .map(|pod| {
                serde_json::to_value(pod)
                    .map(|v| app::replica(&v))
                    .map_err(|e| OperatorError::Encode(e.to_string()))
            })
            .collect()
    }

    /// Force-delete one of the app's pods (Knative starts a replacement). A pod that does not
    /// belong to the app is refused, so a wrong name cannot take down another workload;
    /// `false` when the pod does not exist.
    pub async fn delete_replica(&self, app: &AppId, pod_name: &str) -> Result<bool> {
        let name = app.kservice_name()?;
        let Some(pod) = self.pods.get_opt(pod_name).await? else {
            return Ok(false);
        };
        let owner = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(app::LABEL_KNATIVE_SERVICE));
        if owner.map(String::as_str) != Some(name.as_str()) {
            return Err(OperatorError::Corrupt {
                name: pod_name.to_owned(),
                reason: format!(
                    "this pod is not a replica of {name} (its {} label is {owner:?}); nothing was deleted",
                    app::LABEL_KNATIVE_SERVICE
                ),
            });
        }
        let force = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match self.pods.delete(pod_name, &force).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Follow apps' KServices: one app, or all when `app` is `None` (Flyte's Subscribe with a
    /// name or ""). Each subscriber holds its own stream; dropping it unsubscribes. The stream
    /// lists what exists first (as `Changed`), then reports changes; it resumes by itself after
    /// a dropped connection. An object that cannot be read as an app is an error item, not the
    /// end of the stream.
    pub fn watch(
        &self,
        app: Option<&AppId>,
    ) -> Result<impl Stream<Item = Result<AppEvent>> + Send + use<>> {
        let mut config = watcher::Config::default().labels(&app::app_selector(None, None));
        if let Some(app) = app {
            config = config.fields(&format!("metadata.name={}", app.kservice_name()?));
        }
        Ok(
            watcher::watcher(self.api.clone(), config).filter_map(|event| async move {
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => Some(
                        to_value(&object)
                            .and_then(|v| app::app_status(&v))
                            .map(AppEvent::Changed),
                    ),
                    Ok(watcher::Event::Delete(object)) => Some(Ok(AppEvent::Deleted {
                        kservice_name: object.metadata.name.unwrap_or_default(),
                    })),
                    Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                    Err(e) => Some(Err(OperatorError::Watch(e.to_string()))),
                }
            }),
        )
    }

    /// Delete the app's KService; `false` when there was none.
    pub async fn delete(&self, app: &AppId) -> Result<bool> {
        let name = app.kservice_name()?;
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
