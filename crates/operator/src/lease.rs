//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several replicas only one
//! reconciles. The decision is pure ([`decide`]); [`Elector`] is the thin driver that reads and
//! writes the Lease (every write guarded by its `resourceVersion`, so two candidates cannot both
//! take it).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{OperatorError, Result};

/// What a candidate does with the Lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (or the holder stopped renewing): take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds it until `until_ms` (Unix milliseconds) unless they renew.
    Follow { holder: String, until_ms: i64 },
}

/// The facts of a Lease a decision needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub holder: Option<String>,
    pub renewed_ms: Option<i64>,
    pub duration: Option<Duration>,
}

/// Decide, at `now_ms`, what `me` does with a Lease that reads `held` (`None`: no Lease yet).
/// A Lease whose holder has not renewed within its duration is free.
pub fn decide(held: Option<&Held>, me: &str, now_ms: i64, default_duration: Duration) -> Decision {
    let Some(held) = held else {
        return Decision::Acquire;
    };
    match held.holder.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == me => Decision::Renew,
        Some(holder) => {
            let duration = held.duration.unwrap_or(default_duration);
            let until_ms = held
                .renewed_ms
                .unwrap_or(0)
                .saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX));
            if now_ms >= until_ms {
                Decision::Acquire
            } else {
                Decision::Follow {
                    holder: holder.to_owned(),
                    until_ms,
                }
            }
        }
    }
}

/// One candidate for one Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The Lease record last seen (holder and renew time, as written) and when, on our own
    /// monotonic clock: a follower times the holder's silence itself, so clocks that disagree
    /// cannot make it take a Lease that is still being renewed.
    seen: std::sync::Arc<std::sync::Mutex<Option<(String, tokio::time::Instant)>>>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

fn micro_time(ms: i64) -> MicroTime {
    MicroTime(
        k8s_openapi::jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

impl Elector {
    /// `identity` competes for the Lease `namespace/name`, held for `duration` per renewal.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
            seen: std::sync::Arc::default(),
        }
    }

    /// How long a holder may go without a successful renewal before it stops acting: less than
    /// the Lease's duration, so it has stopped before any follower may take over (client-go's
    /// renew deadline).
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often a holder renews, and a follower looks again.
    pub fn retry_period(&self) -> Duration {
        self.duration / 3
    }

    /// One round: read the Lease and acquire or renew it if [`decide`] says so. `Ok(true)`: we
    /// hold it now.
    pub async fn try_lead(&self) -> Result<bool> {
        // A round that hangs (a dead connection, the client's own retries) counts as failed.
        match tokio::time::timeout(self.retry_period(), self.try_lead_once()).await {
            Ok(result) => result,
            Err(_) => Err(OperatorError::Reconcile(format!(
                "the lease {} did not answer within {:?}",
                self.name,
                self.retry_period()
            ))),
        }
    }

    async fn try_lead_once(&self) -> Result<bool> {
        let current = self.api.get_opt(&self.name).await?;
        let now = now_ms();
        let held = current.as_ref().map(|lease| {
            let spec = lease.spec.clone().unwrap_or_default();
            // When this record was first seen as it is now, on our clock, stands in for its
            // renew time.
            let record = format!(
                "{:?}/{:?}",
                spec.holder_identity,
                spec.renew_time.as_ref().map(|t| t.0.as_millisecond())
            );
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let first_seen = match seen.as_ref() {
                Some((same, at)) if *same == record => *at,
                _ => {
                    let at = tokio::time::Instant::now();
                    *seen = Some((record, at));
                    at
                }
            };
            let silent_ms = i64::try_from(first_seen.elapsed().as_millis()).unwrap_or(i64::MAX);
            Held {
                holder: spec.holder_identity,
                renewed_ms: Some(now.saturating_sub(silent_ms)),
                duration: spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs),
            }
        });
        let decision = decide(held.as_ref(), &self.identity, now, self.duration);
        if let Decision::Follow { .. } = decision {
            return Ok(false);
        }
        let old_spec = current
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let acquired = decision == Decision::Acquire;
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: if acquired {
                Some(micro_time(now))
            } else {
                old_spec.acquire_time
            },
            renew_time: Some(micro_time(now)),
            lease_transitions: Some(
                old_spec.lease_transitions.unwrap_or(0) + i32::from(acquired && current.is_some()),
            ),
            ..LeaseSpec::default()
        };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The resourceVersion read above guards the write: of two candidates that
                // both saw the Lease free, one write wins and the other gets a conflict.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(OperatorError::Kube(e)),
        }
    }

    /// Give the Lease up if we hold it (on a clean shutdown, so another replica need not wait
    /// for it to expire).
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            // Someone wrote it meanwhile: it is theirs now.
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(OperatorError::Kube(e)),
        }
    }

    /// Wait until we hold the Lease.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            match self.try_lead().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot read the lease; trying again"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renew the Lease until no renewal has succeeded for [`Elector::renew_deadline`] (counted
    /// from before the last successful write, so the time it took is not granted) or another
    /// holder appears; returns then (leadership is lost, the caller stops acting at once).
    pub async fn hold(&self) {
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            let deadline = renewed_at + self.renew_deadline();
            let next = (tokio::time::Instant::now() + self.retry_period()).min(deadline);
            tokio::time::sleep_until(next).await;
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(lease = %self.name, "no renewal within the renew deadline; stepping down");
                return;
            }
            let attempt_started = tokio::time::Instant::now();
            match self.try_lead().await {
                Ok(true) => renewed_at = attempt_started,
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "another replica holds the lease now");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let d = Duration::from_secs(15);
        let held = |holder: &str, renewed_ms: i64| Held {
            holder: Some(holder.to_owned()),
            renewed_ms: Some(renewed_ms),
            duration: Some(d),
        };
        for (lease, now, want) in [
            (None, 0, Decision::Acquire),
            (Some(Held::default()), 0, Decision::Acquire),
            (Some(held("me", 0)), 1_000, Decision::Renew),
            (Some(held("me", 0)), 100_000, Decision::Renew),
            (
                Some(held("other", 1_000)),
                15_999,
                Decision::Follow {
                    holder: "other".to_owned(),
                    until_ms: 16_000,
                },
            ),
            (Some(held("other", 1_000)), 16_000, Decision::Acquire),
        ] {
            assert_eq!(
                decide(lease.as_ref(), "me", now, d),
                want,
                "{lease:?} at {now}"
            );
        }
    }
}
