//! The requests a client of a Flyte control plane builds most: a run of a container task, and
//! the identifiers in them with Flyte's defaults.

use buffa::MessageField;
use flyte_idl::flyteidl2::common::RunIdentifier;
use flyte_idl::flyteidl2::core::{Container, KeyValuePair, TaskTemplate};
use flyte_idl::flyteidl2::task::{Envs, RunSpec, TaskSpec};
use flyte_idl::flyteidl2::workflow::CreateRunRequest;

/// The project Flyte's tools use when none is given.
pub const DEFAULT_PROJECT: &str = "flytesnacks";
/// The domain Flyte's tools use when none is given.
pub const DEFAULT_DOMAIN: &str = "development";
/// The name of a run's first (root) action.
pub const ROOT_ACTION: &str = "a0";

/// Where runs go: Flyte's `task.org`, `task.project` and `task.domain`. An empty org is the
/// deployment's own (what single-tenant Flyte expects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunScope {
    pub org: String,
    pub project: String,
    pub domain: String,
}

impl Default for RunScope {
    /// Flyte's defaults: no org, `flytesnacks`, `development`.
    fn default() -> Self {
        Self {
            org: String::new(),
            project: DEFAULT_PROJECT.to_owned(),
            domain: DEFAULT_DOMAIN.to_owned(),
        }
    }
}

impl RunScope {
    /// The run `name` in this scope.
    pub fn run_id(&self, name: &str) -> RunIdentifier {
        RunIdentifier {
            org: self.org.clone(),
            project: self.project.clone(),
            domain: self.domain.clone(),
            name: name.to_owned(),
            ..Default::default()
        }
    }

    /// The scope `id` is in.
    pub fn of(id: &RunIdentifier) -> Self {
        Self {
            org: id.org.clone(),
            project: id.project.clone(),
            domain: id.domain.clone(),
        }
    }
}

/// Name-value pairs as flyteidl2 carries environments.
pub fn key_values(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<KeyValuePair> {
    pairs
        .into_iter()
        .map(|(key, value)| KeyValuePair {
            key,
            value,
            ..Default::default()
        })
        .collect()
}

/// A container task that runs `command` with `env` (the task's own environment).
pub fn container_task(
    command: Vec<String>,
    env: impl IntoIterator<Item = (String, String)>,
) -> TaskSpec {
    let container = Container {
        command,
        env: key_values(env),
        ..Default::default()
    };
    TaskSpec {
        task_template: MessageField::some(TaskTemplate {
            r#type: "container".to_owned(),
            target: Some(container.into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `CreateRun` of `task` as the run `id`, with `run_env` on the run (where Flyte's debug
/// variables go).
pub fn create_run(
    id: RunIdentifier,
    task: TaskSpec,
    run_env: impl IntoIterator<Item = (String, String)>,
) -> CreateRunRequest {
    CreateRunRequest {
        id: Some(id.into()),
        task: Some(task.into()),
        run_spec: MessageField::some(RunSpec {
            envs: MessageField::some(Envs {
                values: key_values(run_env),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
