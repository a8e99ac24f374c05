//! The controller's counters, served in Prometheus' text format on a local port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use flyte_reconciler_core::{Effect, EffectKind};

/// What the controller counts. Shared between the controller and the server.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    reconcile_failures: AtomicU64,
    effects: Mutex<BTreeMap<String, u64>>,
    action_events: Mutex<BTreeMap<&'static str, u64>>,
    leader: AtomicBool,
}

impl Metrics {
    pub(crate) fn reconciled(&self, failed: bool) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.reconcile_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn effect(&self, effect: &Effect) {
        let kind: EffectKind = effect.kind();
        *self
            .effects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(kind.to_string())
            .or_default() += 1;
    }

    pub(crate) fn action_event(&self, phase: flyte_reconciler_core::ActionPhase) {
        *self
            .action_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(phase.as_str())
            .or_default() += 1;
    }

    pub(crate) fn set_leader(&self, leading: bool) {
        self.leader.store(leading, Ordering::Relaxed);
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP flyte_run_operator_reconciles_total Reconcile passes run.\n# TYPE flyte_run_operator_reconciles_total counter\nflyte_run_operator_reconciles_total {}",
            self.reconciles.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP flyte_run_operator_reconcile_failures_total Passes that stopped on an error and were retried.\n# TYPE flyte_run_operator_reconcile_failures_total counter\nflyte_run_operator_reconcile_failures_total {}",
            self.reconcile_failures.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP flyte_run_operator_effects_total Effects carried out, by kind.\n# TYPE flyte_run_operator_effects_total counter\n",
        );
        for (kind, count) in self
            .effects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "flyte_run_operator_effects_total{{kind=\"{kind}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP flyte_run_operator_action_events_total Action events sent, by phase.\n# TYPE flyte_run_operator_action_events_total counter\n",
        );
        for (phase, count) in self
            .action_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "flyte_run_operator_action_events_total{{phase=\"{phase}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP flyte_run_operator_leader Whether this replica acts (1) or waits for the lease (0).\n# TYPE flyte_run_operator_leader gauge\nflyte_run_operator_leader {}",
            u8::from(self.leader.load(Ordering::Relaxed))
        );
        out
    }
}

/// Serve `GET /metrics` (any path answers the same). Connections are accepted through
/// flyte-listen, so their number is bounded and running out of descriptors pauses accepting
/// instead of failing the server.
pub async fn serve(listener: tokio::net::TcpListener, metrics: std::sync::Arc<Metrics>) {
    let listener = flyte_listen::GuardedListener::new(listener, flyte_listen::Limits::default());
    loop {
        let (stream, _, permit) = listener.accept().await;
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |_request| {
                let body = metrics.render();
                async move {
                    hyper::Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_lists_every_counter() {
        let metrics = Metrics::default();
        metrics.reconciled(false);
        metrics.reconciled(true);
        metrics.effect(&Effect::AddFinalizer);
        metrics.action_event(flyte_reconciler_core::ActionPhase::Succeeded);
        metrics.set_leader(true);
        let text = metrics.render();
        for line in [
            "flyte_run_operator_reconciles_total 2",
            "flyte_run_operator_reconcile_failures_total 1",
            "flyte_run_operator_effects_total{kind=\"AddFinalizer\"} 1",
            "flyte_run_operator_action_events_total{phase=\"SUCCEEDED\"} 1",
            "flyte_run_operator_leader 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }
}
