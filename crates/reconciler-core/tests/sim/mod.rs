//! Fakes for the simulation: a seeded PRNG, an object store with optimistic concurrency and
//! finalizers, a cache with reservations, a plugin whose tasks follow scripted behaviours, and
//! a control plane that receives action events. None of them inject faults; the driver in
//! `simulation.rs` decides when a call fails.

use std::collections::{BTreeMap, BTreeSet};

use flyte_reconciler_core::{
    ActionEvent, ActionPhase, CacheLookup, CachePutResult, ErrorKind, ExecutionError, FINALIZER,
    PhaseInfo, PluginCall, PluginError, PluginPhase, PluginResult, PluginState, PluginTransition,
    Reservation, TaskAction, TaskActionStatus, Timestamp, WriteResult,
};

// ----- PRNG ---------------------------------------------------------------------------------

/// splitmix64: tiny, fast, and every seed gives a good stream.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant at these sizes.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u32, hi: u32) -> u32 {
        lo + u32::try_from(self.below(u64::from(hi - lo) + 1)).unwrap()
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }
}

// ----- store --------------------------------------------------------------------------------

/// Objects by name, with Kubernetes semantics where the reconciler depends on them:
/// resource versions, status preconditions, finalizers holding back deletion.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) objects: BTreeMap<String, TaskAction>,
    next_version: u64,
}

impl Store {
    pub(crate) fn insert(&mut self, mut obj: TaskAction) {
        obj.metadata.resource_version = self.bump();
        self.objects.insert(obj.metadata.name.clone(), obj);
    }

    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Applies `change` to a live object, bumping its version. `false` if it is gone.
    pub(crate) fn modify(&mut self, name: &str, change: impl FnOnce(&mut TaskAction)) -> bool {
        let version = self.bump();
        let Some(obj) = self.objects.get_mut(name) else {
            return false;
        };
        change(obj);
        obj.metadata.resource_version = version;
        if obj.is_being_deleted() && obj.metadata.finalizers.is_empty() {
            self.objects.remove(name);
        }
        true
    }

    pub(crate) fn write_status(
        &mut self,
        name: &str,
        status: &TaskActionStatus,
        expected_version: u64,
    ) -> WriteResult {
        match self.objects.get(name) {
            None => WriteResult::Failed("not found".into()),
            Some(obj) if obj.metadata.resource_version != expected_version => WriteResult::Conflict,
            Some(_) => {
                self.modify(name, |obj| obj.status = status.clone());
                WriteResult::Ok
            }
        }
    }

    pub(crate) fn add_finalizer(&mut self, name: &str) -> WriteResult {
        match self.objects.get(name) {
            None => WriteResult::Failed("not found".into()),
            // The API server refuses new finalizers on an object being deleted.
            Some(obj) if obj.is_being_deleted() => WriteResult::Conflict,
            Some(obj) if obj.has_finalizer() => WriteResult::Ok,
            Some(_) => {
                self.modify(name, |obj| obj.metadata.finalizers.push(FINALIZER.into()));
                WriteResult::Ok
            }
        }
    }

    pub(crate) fn remove_finalizer(&mut self, name: &str) -> WriteResult {
        if self.modify(name, |obj| {
            obj.metadata.finalizers.retain(|f| f != FINALIZER);
        }) {
            WriteResult::Ok
        } else {
            WriteResult::Failed("not found".into())
        }
    }

    pub(crate) fn apply_labels(&mut self, name: &str, labels: &[(String, String)]) -> WriteResult {
        if self.modify(name, |obj| {
            obj.metadata.labels.extend(labels.iter().cloned());
        }) {
            WriteResult::Ok
        } else {
            WriteResult::Failed("not found".into())
        }
    }

    /// Requests deletion; objects without finalizers go at once.
    pub(crate) fn delete(&mut self, name: &str, now: Timestamp) -> WriteResult {
        let deleted = self.modify(name, |obj| {
            obj.metadata.deletion_timestamp.get_or_insert(now);
        });
        if deleted {
            WriteResult::Ok
        } else {
            WriteResult::Failed("not found".into())
        }
    }
}

// ----- cache --------------------------------------------------------------------------------

/// Outputs by cache key, and reservations by key (they never expire here, which makes a
/// leaked reservation visible instead of hiding it behind a timeout).
#[derive(Debug, Default)]
pub(crate) struct FakeCache {
    pub(crate) entries: BTreeMap<String, String>,
    pub(crate) reservations: BTreeMap<String, String>,
}

impl FakeCache {
    pub(crate) fn get(&self, key: &str) -> CacheLookup {
        match self.entries.get(key) {
            Some(uri) => CacheLookup::Hit {
                outputs_uri: Some(uri.clone()),
            },
            None => CacheLookup::NotFound,
        }
    }

    pub(crate) fn reserve(&mut self, key: &str, owner: &str) -> Reservation {
        match self.reservations.get(key) {
            Some(holder) if holder != owner => Reservation::HeldBy(holder.clone()),
            _ => {
                self.reservations.insert(key.into(), owner.into());
                Reservation::Owned
            }
        }
    }

    pub(crate) fn put(&mut self, key: &str, outputs_uri: Option<&str>) -> CachePutResult {
        if self.entries.contains_key(key) {
            return CachePutResult::AlreadyExists;
        }
        self.entries
            .insert(key.into(), outputs_uri.unwrap_or("s3://outputs").into());
        CachePutResult::Stored
    }

    pub(crate) fn release(&mut self, key: &str, owner: &str) {
        if self
            .reservations
            .get(key)
            .is_some_and(|holder| holder == owner)
        {
            self.reservations.remove(key);
        }
    }
}

// ----- plugin -------------------------------------------------------------------------------

/// How a simulated task behaves, launch after launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// Queued, then running for `polls` calls, then success.
    Succeeds { polls: u32 },
    /// Attempts up to `failing` exit non-zero (retryable user failure); later ones succeed.
    FailsAttempts { failing: u32 },
    /// Fails for good.
    FailsPermanently,
    /// The first `failing` launches die for platform reasons (retryable system failure).
    LosesLaunches { failing: u32 },
    /// Every call fails with a retryable system error.
    ErrorsForever,
    /// Every call fails with a non-retryable code.
    RejectsSpec,
    /// Aborted from outside while running.
    AbortedOutside,
}

/// One reply of a launch's script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Phase(PluginPhase),
    UserFailure,
    SystemFailure,
    PermanentFailure,
}

#[derive(Debug)]
struct Launch {
    id: u64,
    script: Vec<Reply>,
    cursor: usize,
    aborted: bool,
}

/// A plugin whose launches are keyed like Kubernetes pods: one per (action, attempt), so a
/// repeated launch with lost state adopts the live one instead of starting a second.
#[derive(Debug, Default)]
pub(crate) struct FakePlugin {
    next_id: u64,
    launches: BTreeMap<(String, u32), Launch>,
    launch_counts: BTreeMap<String, u32>,
    pub(crate) finalized: BTreeSet<String>,
    /// Highest attempt each action was ever launched with.
    pub(crate) highest_attempt: BTreeMap<String, u32>,
}

impl FakePlugin {
    pub(crate) fn handle(
        &mut self,
        name: &str,
        behaviour: Behaviour,
        call: &PluginCall,
    ) -> PluginResult {
        match behaviour {
            Behaviour::ErrorsForever => return plugin_error("Unavailable"),
            Behaviour::RejectsSpec => return plugin_error("BadTaskSpecification"),
            _ => {}
        }
        let key = (name.to_owned(), call.attempt);
        let known_id = decode(&call.state);
        let live = self.launches.get(&key).filter(|launch| !launch.aborted);
        let id = match (known_id, live) {
            // The state names a launch that is still there: poll it.
            (Some(id), Some(launch)) if launch.id == id => id,
            // The state names a launch that is gone (aborted or replaced).
            (Some(_), _) => {
                return failure(
                    PluginPhase::RetryableFailure,
                    ErrorKind::System,
                    "ResourceDeletedExternally",
                );
            }
            // No state (first call, or the status write with it was lost): adopt the live
            // launch like a pod create that finds the pod, else launch.
            (None, Some(launch)) => launch.id,
            (None, None) => self.launch(name, behaviour, call.attempt),
        };
        let launch = self.launches.get_mut(&key).expect("launched above");
        debug_assert_eq!(launch.id, id);
        let reply = launch.script[launch.cursor];
        launch.cursor = (launch.cursor + 1).min(launch.script.len() - 1);
        let state = Some(PluginState {
            bytes: id.to_le_bytes().to_vec(),
            version: 1,
        });
        let info = match reply {
            Reply::Phase(phase) => PhaseInfo {
                outputs_uri: (phase == PluginPhase::Success)
                    .then(|| format!("s3://outputs/{name}/{}", call.attempt)),
                ..PhaseInfo::new(phase, format!("{phase:?}"))
            },
            Reply::UserFailure => {
                return failure(PluginPhase::RetryableFailure, ErrorKind::User, "ExitCode1");
            }
            Reply::SystemFailure => {
                return failure(PluginPhase::RetryableFailure, ErrorKind::System, "NodeLost");
            }
            Reply::PermanentFailure => {
                return failure(PluginPhase::PermanentFailure, ErrorKind::User, "OOMKilled");
            }
        };
        PluginResult::Transition(PluginTransition { info, state })
    }

    fn launch(&mut self, name: &str, behaviour: Behaviour, attempt: u32) -> u64 {
        let count = self.launch_counts.entry(name.to_owned()).or_default();
        *count += 1;
        let nth_launch = *count;
        let highest = self.highest_attempt.entry(name.to_owned()).or_default();
        *highest = (*highest).max(attempt);
        let running_then = |end: Reply, polls: u32| {
            let mut script = vec![Reply::Phase(PluginPhase::Queued)];
            script.extend((0..polls).map(|_| Reply::Phase(PluginPhase::Running)));
            script.push(end);
            script
        };
        let success = Reply::Phase(PluginPhase::Success);
        let script = match behaviour {
            Behaviour::Succeeds { polls } => running_then(success, polls),
            Behaviour::FailsAttempts { failing } if attempt <= failing => {
                running_then(Reply::UserFailure, 1)
            }
            Behaviour::FailsPermanently => running_then(Reply::PermanentFailure, 1),
            Behaviour::LosesLaunches { failing } if nth_launch <= failing => {
                running_then(Reply::SystemFailure, 0)
            }
            Behaviour::FailsAttempts { .. } | Behaviour::LosesLaunches { .. } => {
                running_then(success, 1)
            }
            Behaviour::AbortedOutside => running_then(Reply::Phase(PluginPhase::Aborted), 1),
            Behaviour::ErrorsForever | Behaviour::RejectsSpec => unreachable!("never launched"),
        };
        self.next_id += 1;
        let launch = Launch {
            id: self.next_id,
            script,
            cursor: 0,
            aborted: false,
        };
        self.launches.insert((name.to_owned(), attempt), launch);
        self.next_id
    }

    pub(crate) fn abort(&mut self, name: &str, attempt: u32) {
        if let Some(launch) = self.launches.get_mut(&(name.to_owned(), attempt)) {
            launch.aborted = true;
        }
    }

    /// Something outside kills whatever runs for the action (an evicted pod).
    pub(crate) fn kill(&mut self, name: &str) {
        for ((owner, _), launch) in &mut self.launches {
            if owner == name {
                launch.aborted = true;
            }
        }
    }

    pub(crate) fn finalize(&mut self, name: &str) {
        self.kill(name);
        self.finalized.insert(name.to_owned());
    }
}

fn decode(state: &PluginState) -> Option<u64> {
    <[u8; 8]>::try_from(state.bytes.as_slice())
        .ok()
        .map(u64::from_le_bytes)
}

fn plugin_error(code: &str) -> PluginResult {
    PluginResult::Error(PluginError {
        code: code.into(),
        message: format!("{code} from the fake plugin"),
    })
}

fn failure(phase: PluginPhase, kind: ErrorKind, code: &str) -> PluginResult {
    let error = ExecutionError::new(kind, code, format!("{code} in the fake plugin"));
    PluginResult::Transition(PluginTransition {
        info: PhaseInfo::failure(phase, error),
        state: None,
    })
}

// ----- control plane ------------------------------------------------------------------------

/// Receives action events and deduplicates them, as the run service does.
#[derive(Debug, Default)]
pub(crate) struct ControlPlane {
    /// (attempt, phase) pairs seen per action.
    pub(crate) seen: BTreeMap<String, BTreeSet<(u32, ActionPhase)>>,
}

impl ControlPlane {
    pub(crate) fn record(&mut self, event: &ActionEvent) {
        self.seen
            .entry(event.id.name.clone())
            .or_default()
            .insert((event.attempt, event.phase));
    }

    pub(crate) fn has_seen(&self, action: &str, attempt: u32, phase: ActionPhase) -> bool {
        self.seen
            .get(action)
            .is_some_and(|seen| seen.contains(&(attempt, phase)))
    }
}
