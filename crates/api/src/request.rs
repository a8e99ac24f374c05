//! The requests a client of a Flyte control plane builds most: a run of a container task.

use buffa::MessageField;
use flyte_idl::flyteidl2::common::RunIdentifier;
use flyte_idl::flyteidl2::core::{Container, KeyValuePair, TaskTemplate};
use flyte_idl::flyteidl2::task::{Envs, RunSpec, TaskSpec};
use flyte_idl::flyteidl2::workflow::CreateRunRequest;

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
