//! Runs, each with one action (`a0`), executed as local processes. The TaskAction state machine
//! of flyte-reconciler-core decides; this module is its driver: it keeps the object, runs the
//! effects (the "local-process" plugin starts, watches and kills process groups) and feeds the
//! results back.

mod driver;
mod entry;
mod ingress;
mod plugin;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use flyte_api::ActionPhaseExt;
use flyte_idl::flyteidl2::common::{ActionPhase, RunIdentifier};
use flyte_reconciler_core::{TaskAction, TaskActionSpec};
use tokio::sync::Notify;

use driver::drive;
use entry::{stored_phase, system_error};
use ingress::{DebugRoute, close_debug_route};

pub(crate) use driver::abort;
pub(crate) use entry::{LocalTask, RunEntry};
pub(crate) use ingress::Ingress;

/// The only plugin the sandbox has: run the task's command as a local process.
pub(crate) const TASK_TYPE: &str = "local-process";

/// The name of a run's (only) action.
pub(crate) const ACTION_NAME: &str = flyte_api::request::ROOT_ACTION;

/// One run's shared state: the entry, and a bell that wakes its driver.
#[derive(Debug)]
pub(crate) struct RunSlot {
    entry: Mutex<RunEntry>,
    wake: Notify,
}

impl RunSlot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, RunEntry> {
        self.entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// All runs of this sandbox.
#[derive(Debug)]
pub(crate) struct Runs {
    slots: Mutex<HashMap<String, Arc<RunSlot>>>,
    groups: flyte_reaper::Groups,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    store: Arc<crate::store::Store>,
    pub(crate) ingress: Arc<Ingress>,
    /// Where debug servers keep their host keys: `<state>/debug/<project>-<domain>-<run>`.
    debug_dir: std::path::PathBuf,
}

/// Why a run could not be created.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CreateError {
    AlreadyExists,
    Invalid(String),
    Store(String),
}

fn key(id: &RunIdentifier) -> String {
    format!("{}/{}/{}", id.project, id.domain, id.name)
}

/// Projects and domains as Flyte accepts them (DNS-1123 labels): lower-case letters, digits
/// and '-', 1 to 63 characters, starting and ending with a letter or digit. They name files
/// and directories here (`logs/<project>/<domain>/<run>.log`), so nothing else may pass:
/// no `/`, no `..`, no NUL, and the nested layout keeps distinct runs in distinct files.
pub(crate) fn check_label(what: &str, value: &str) -> Result<(), String> {
    let valid = (1..=63).contains(&value.len())
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {value:?}: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        ))
    }
}

/// The command and environment a process can actually be given: no NUL anywhere (the kernel
/// cannot pass one), environment names non-empty and without `=`.
pub(crate) fn check_task(task: &LocalTask) -> Result<(), String> {
    if let Some(arg) = task.argv.iter().find(|a| a.contains('\0')) {
        return Err(format!("the command argument {arg:?} contains a NUL byte"));
    }
    for (name, value) in &task.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(format!(
                "invalid environment variable name {name:?}: it must be non-empty, without '=' or NUL"
            ));
        }
        if value.contains('\0') {
            return Err(format!(
                "the value of environment variable {name} contains a NUL byte"
            ));
        }
    }
    Ok(())
}

/// Run names as Kubernetes and Flyte accept them: lower-case letters, digits and '-', 1 to 30
/// characters, starting with a letter.
pub(crate) fn check_run_name(name: &str) -> Result<(), String> {
    let valid = (1..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid run name {name:?}: use 1 to 30 lower-case letters, digits and '-', starting with a letter"
        ))
    }
}

impl Runs {
    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<RunSlot>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn new(state_dir: &std::path::Path, store: Arc<crate::store::Store>) -> Self {
        // A watchdog ends the tasks and shells even if the sandbox is SIGKILLed.
        let groups = flyte_reaper::Groups::with_watchdog().unwrap_or_else(|error| {
            tracing::warn!(%error, "running without a process watchdog");
            flyte_reaper::Groups::new()
        });
        Self {
            slots: Mutex::default(),
            groups,
            stopping: Arc::default(),
            store,
            ingress: Arc::default(),
            debug_dir: flyte_home::SandboxDir::new(state_dir).task_debug_dir(),
        }
    }

    /// Bring back the runs of an earlier life of this sandbox. Their processes died with it (it
    /// does not adopt orphans), so an action that was not over is failed as a system error.
    pub(crate) fn load(&self) -> crate::Result<usize> {
        let records = self.store.runs()?;
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for record in &records {
            let id = RunIdentifier {
                project: record.project.clone(),
                domain: record.domain.clone(),
                name: record.name.clone(),
                ..Default::default()
            };
            let mut phase = stored_phase(&record.phase);
            let mut error = record
                .error_json
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok());
            let interrupted = !phase.is_terminal();
            if interrupted {
                phase = ActionPhase::Failed;
                error = Some(system_error(
                    "the sandbox stopped while this action ran; its processes were stopped with it",
                    "SandboxRestarted",
                ));
            }
            let mut object = TaskAction::new(
                id.project.clone(),
                format!("{}-{ACTION_NAME}", id.name),
                TaskActionSpec::default(),
            );
            object.status.attempts = record.attempts;
            let history = self
                .store
                .events((&record.project, &record.domain, &record.name))?;
            let mut entry = RunEntry {
                id: id.clone(),
                object,
                phase,
                error,
                abort_reason: record.abort_reason.clone(),
                process: None,
                ide_link: None,
                debug: None,
                debug_server: None,
                groups: self.groups.clone(),
                stopping: Arc::clone(&self.stopping),
                // Nothing drives a loaded run: it is over.
                gone: true,
                store: Arc::clone(&self.store),
                task_json: record.task_json.clone(),
                history,
                pending: Vec::new(),
            };
            if interrupted {
                let attempt = entry.history.last().map_or(record.attempts, |e| e.attempt);
                entry.record_event(attempt, crate::clock::now());
            }
            entry.persist();
            // Nothing serves requests yet.
            entry.take_writes().flush();
            slots.insert(
                key(&id),
                Arc::new(RunSlot {
                    entry: Mutex::new(entry),
                    wake: Notify::new(),
                }),
            );
        }
        Ok(records.len())
    }

    /// The sandbox is shutting down: stop driving, record every unfinished action as failed
    /// by the system (`SandboxStopped`: not the task's fault, no retry spent), end the debug
    /// sessions, then SIGTERM every process group (tasks and shells), wait up to `grace`, and
    /// SIGKILL what is left. Blocks the calling thread; returns how many actions were running.
    pub(crate) fn stop_processes(&self, grace: Duration) -> usize {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let slots: Vec<Arc<RunSlot>> = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let mut running = 0;
        for slot in slots {
            let mut entry = slot.lock();
            if entry.gone || entry.phase.is_terminal() {
                continue;
            }
            running += usize::from(entry.process.as_ref().is_some_and(|p| p.exit.is_none()));
            entry.phase = ActionPhase::Failed;
            entry.error = Some(system_error(
                "the sandbox was stopped while this action ran",
                "SandboxStopped",
            ));
            let attempt = entry.object.status.attempts.max(1);
            entry.record_event(attempt, crate::clock::now());
            close_debug_route(&mut entry);
            entry.persist();
            // The drivers have stopped: these writes are carried out here, the lock released.
            let writes = entry.take_writes();
            drop(entry);
            writes.flush();
        }
        self.groups.terminate_all(grace);
        running
    }

    pub(crate) fn get(&self, id: &RunIdentifier) -> Option<Arc<RunSlot>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key(id))
            .cloned()
    }

    /// Every (project, domain) a run was made in.
    pub(crate) fn projects(&self) -> std::collections::BTreeSet<(String, String)> {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .values()
            .map(|s| {
                let e = s.lock();
                (e.id.project.clone(), e.id.domain.clone())
            })
            .collect()
    }

    pub(crate) fn list(&self, project: &str, domain: &str) -> Vec<Arc<RunSlot>> {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut found: Vec<_> = slots
            .values()
            .filter(|s| {
                let e = s.lock();
                e.id.project == project && e.id.domain == domain
            })
            .cloned()
            .collect();
        found.sort_by_key(|s| s.lock().id.name.clone());
        found
    }

    /// Register a run and start driving it.
    pub(crate) fn create(
        &self,
        id: &RunIdentifier,
        task: &LocalTask,
        retries: u32,
        logs: std::path::PathBuf,
    ) -> Result<Arc<RunSlot>, CreateError> {
        check_label("project", &id.project).map_err(CreateError::Invalid)?;
        check_label("domain", &id.domain).map_err(CreateError::Invalid)?;
        check_run_name(&id.name).map_err(CreateError::Invalid)?;
        check_task(task).map_err(CreateError::Invalid)?;
        if task.argv.is_empty() {
            return Err(CreateError::Invalid("the task has no command".to_owned()));
        }
        let template =
            serde_json::to_vec(&task).map_err(|e| CreateError::Invalid(e.to_string()))?;
        let task_json = String::from_utf8_lossy(&template).into_owned();
        let spec = TaskActionSpec {
            run_name: id.name.clone(),
            project: id.project.clone(),
            domain: id.domain.clone(),
            action_name: ACTION_NAME.to_owned(),
            task_type: TASK_TYPE.to_owned(),
            short_name: task.argv[0].clone(),
            task_template: template,
            env_vars: task.env.clone(),
            input_uri: format!("sandbox://{}/inputs", key(id)),
            run_output_base: format!("sandbox://{}/outputs", key(id)),
            retries,
            cache_key: task.cache_key(id).unwrap_or_default(),
            ..TaskActionSpec::default()
        };
        let object = TaskAction::new(
            id.project.clone(),
            format!("{}-{ACTION_NAME}", id.name),
            spec,
        );
        let slot = Arc::new(RunSlot {
            entry: Mutex::new(RunEntry {
                id: id.clone(),
                object,
                phase: ActionPhase::Queued,
                error: None,
                abort_reason: None,
                process: None,
                ide_link: None,
                debug_server: None,
                groups: self.groups.clone(),
                stopping: Arc::clone(&self.stopping),
                debug: flyte_debug_server::settings::enabled(|k| task.env.get(k).cloned()).then(
                    || DebugRoute {
                        ingress: Arc::clone(&self.ingress),
                        path: format!(
                            "/v1/debug/{}/{}/{}/{ACTION_NAME}",
                            id.project, id.domain, id.name
                        ),
                        // Validated names without '/', nested: one directory per run.
                        state_dir: self
                            .debug_dir
                            .join(&id.project)
                            .join(&id.domain)
                            .join(&id.name),
                    },
                ),
                gone: false,
                store: Arc::clone(&self.store),
                task_json,
                history: Vec::new(),
                pending: Vec::new(),
            }),
            wake: Notify::new(),
        });
        // The name is taken in the map first (so two creates of one name cannot both win), then
        // the run is saved with the map's lock released: listing and reading runs never wait
        // for the disk. A failed save gives the name back.
        {
            let mut slots = self.slots();
            if slots.contains_key(&key(id)) {
                return Err(CreateError::AlreadyExists);
            }
            slots.insert(key(id), Arc::clone(&slot));
        }
        let record = slot.lock().record();
        if let Err(e) = self.store.insert_run(&record, crate::clock::unix_secs()) {
            self.slots().remove(&key(id));
            return Err(CreateError::Store(e.to_string()));
        }
        tokio::spawn(drive(Arc::clone(&slot), logs));
        Ok(slot)
    }
}
