//! Debug runs' routes: the in-process debug server of a debug run, published on the
//! sandbox's ingress by path, and withdrawn when the run ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use flyte_idl::flyteidl2::core;

use super::entry::{LocalTask, RunEntry};

/// A debug run's route on the ingress, and where its debug server keeps its key.
#[derive(Debug, Clone)]
pub(super) struct DebugRoute {
    pub(super) ingress: Arc<Ingress>,
    pub(super) path: String,
    pub(super) state_dir: std::path::PathBuf,
}

/// One debug run's route: its in-process server, and that server's host key.
#[derive(Clone)]
pub(crate) struct IngressRoute {
    pub(crate) target: flyte_tunnel::bridge::Target,
    pub(crate) host_key: String,
}

/// Where debug runs are reached: the ingress's routes (request path -> the run's in-process
/// debug server) and its base URL, known once it listens.
#[derive(Default)]
pub(crate) struct Ingress {
    pub(crate) routes: Mutex<HashMap<String, IngressRoute>>,
    pub(crate) base_url: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("base_url", &self.base_url.get())
            .finish_non_exhaustive()
    }
}

impl Ingress {
    pub(super) fn routes(&self) -> MutexGuard<'_, HashMap<String, IngressRoute>> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The target serving `path`, for the ingress bridge.
    pub(crate) fn route(&self, path: &str) -> Option<flyte_tunnel::bridge::Target> {
        let path = path.split('?').next().unwrap_or(path);
        self.routes().get(path).map(|r| r.target.clone())
    }

    /// The host key of the server at `path`, for `?ssh-host-key`.
    pub(crate) fn host_key(&self, path: &str) -> Option<String> {
        let path = path.split('?').next().unwrap_or(path);
        self.routes().get(path).map(|r| r.host_key.clone())
    }
}

/// Make the debug server of a debug run (its host key read or made on disk; called without the
/// entry's lock), before the task body runs, as Flyte's entry point does; and its host key.
pub(super) fn debug_server(
    route: &DebugRoute,
    task: &LocalTask,
    groups: &flyte_reaper::Groups,
) -> Result<(flyte_debug_server::DebugServer, String), String> {
    let settings = flyte_debug_server::Settings::from_env(|k| task.env.get(k).cloned())
        .map_err(|e| e.to_string())?;
    if route.ingress.base_url.get().is_none() {
        return Err("the sandbox's ingress is not listening".to_owned());
    }
    let workdir = std::env::current_dir().map_err(|e| e.to_string())?;
    // The server runs in the sandbox's process, not the task's: give sessions the task's
    // environment, as a shell in the task's pod would have.
    let server = flyte_debug_server::DebugServer::new(settings, &route.state_dir, workdir)
        .map_err(|e| e.to_string())?
        .with_task_environment(task.env.clone())
        .with_process_groups(groups.child());
    let host_key = server.host_public_key().map_err(|e| e.to_string())?;
    Ok((server, host_key))
}

/// Publish a started debug server at its route (in memory: called under the entry's lock).
pub(super) fn open_debug_route(
    entry: &mut RunEntry,
    route: &DebugRoute,
    server: flyte_debug_server::DebugServer,
    host_key: String,
) -> Result<(), String> {
    let base = route
        .ingress
        .base_url
        .get()
        .cloned()
        .ok_or("the sandbox's ingress is not listening")?;
    // The host key is not in the link (flyteidl2's TaskLog has no field for it): the route
    // serves it to token holders (`?ssh-host-key`), as our debug server does in a cluster.
    route.ingress.routes().insert(
        route.path.clone(),
        IngressRoute {
            target: server.target(),
            host_key,
        },
    );
    entry.ide_link = Some(core::TaskLog {
        uri: format!("{base}{}", route.path),
        name: "SSH debug (flyte-run)".to_owned(),
        link_type: core::task_log::LinkType::Ide.into(),
        // The server is in this process: it answers as soon as the route exists.
        ready: true,
        ..Default::default()
    });
    entry.debug_server = Some(server);
    Ok(())
}

/// Withdraw a finished debug run's route: nothing answers there any more.
pub(super) fn close_debug_route(entry: &mut RunEntry) {
    if let Some(route) = &entry.debug {
        route.ingress.routes().remove(&route.path);
    }
    // The run is over: its shells go with it, open connections included.
    if let Some(server) = entry.debug_server.take() {
        server.shutdown();
    }
    if let Some(link) = entry.ide_link.as_mut() {
        link.ready = false;
    }
}
