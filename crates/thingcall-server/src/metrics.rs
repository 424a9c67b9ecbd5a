//! `GET /metrics`: Prometheus text.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use thingcall_gateway::GatewayMetrics;

use crate::store::RecordStats;
use crate::sync::lock;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    replies: Mutex<BTreeMap<&'static str, u64>>,
    rejected_replies: Mutex<BTreeMap<&'static str, u64>>,
    http_over_limit: AtomicU64,
    https_handshakes_failed: AtomicU64,
    http_body_timeouts: AtomicU64,
    http_body_over_budget: AtomicU64,
}

impl Metrics {
    /// One request, by action and result code (`Success` or the error code).
    pub(crate) fn count_request(&self, action: &str, code: &str) {
        *lock(&self.requests)
            .entry((action.to_owned(), code.to_owned()))
            .or_default() += 1;
    }

    /// One invocation's latency, by mode (`sync` / `async`).
    pub(crate) fn observe_invocation(&self, mode: &'static str, took: Duration) {
        let secs = took.as_secs_f64();
        let mut all = lock(&self.latency);
        let h = all.entry(mode).or_insert_with(|| Histogram {
            counts: vec![0; BUCKETS.len()],
            ..Histogram::default()
        });
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// One device reply, by how it was matched.
    pub(crate) fn count_reply(&self, kind: &'static str) {
        *lock(&self.replies).entry(kind).or_default() += 1;
    }

    /// One device reply that matched no call of that device, by reason.
    pub(crate) fn count_rejected_reply(&self, reason: &'static str) {
        *lock(&self.rejected_replies).entry(reason).or_default() += 1;
    }

    /// One HTTP connection closed at once: the connection limit was reached.
    pub(crate) fn http_over_limit(&self) {
        self.http_over_limit.fetch_add(1, Ordering::Relaxed);
    }

    /// One HTTPS handshake that failed or did not finish in time.
    pub(crate) fn https_handshake_failed(&self) {
        self.https_handshakes_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// One request body that fell behind its deadline (answered 408).
    pub(crate) fn http_body_timed_out(&self) {
        self.http_body_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// One request body refused: the budget of unverified bytes was spent.
    pub(crate) fn http_body_over_budget(&self) {
        self.http_body_over_budget.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus exposition.
    pub(crate) fn render(
        &self,
        devices_online: usize,
        compiled_models: usize,
        nonces: usize,
        gateway: &GatewayMetrics,
        records: RecordStats,
    ) -> String {
        let mut out = String::new();
        out.push_str("# HELP thingcall_requests_total API requests by action and result code.\n");
        out.push_str("# TYPE thingcall_requests_total counter\n");
        for ((action, code), n) in lock(&self.requests).iter() {
            let _ = writeln!(
                out,
                "thingcall_requests_total{{action=\"{}\",code=\"{}\"}} {n}",
                escape(action),
                escape(code)
            );
        }
        out.push_str("# HELP thingcall_invocation_seconds InvokeThingService latency by mode.\n");
        out.push_str("# TYPE thingcall_invocation_seconds histogram\n");
        for (mode, h) in lock(&self.latency).iter() {
            for (bound, n) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(
                    out,
                    "thingcall_invocation_seconds_bucket{{mode=\"{mode}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "thingcall_invocation_seconds_bucket{{mode=\"{mode}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "thingcall_invocation_seconds_sum{{mode=\"{mode}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "thingcall_invocation_seconds_count{{mode=\"{mode}\"}} {}",
                h.count
            );
        }
        out.push_str(
            "# HELP thingcall_device_replies_total Device replies that completed a call, by how they were matched.\n",
        );
        out.push_str("# TYPE thingcall_device_replies_total counter\n");
        for (kind, n) in lock(&self.replies).iter() {
            let _ = writeln!(out, "thingcall_device_replies_total{{kind=\"{kind}\"}} {n}");
        }
        out.push_str("# HELP thingcall_replies_rejected_total Device replies that matched no call of the device that sent them, by reason.\n");
        out.push_str("# TYPE thingcall_replies_rejected_total counter\n");
        for (reason, n) in lock(&self.rejected_replies).iter() {
            let _ = writeln!(
                out,
                "thingcall_replies_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP thingcall_devices_online Devices connected now.\n");
        out.push_str("# TYPE thingcall_devices_online gauge\n");
        let _ = writeln!(out, "thingcall_devices_online {devices_online}");
        out.push_str("# HELP thingcall_compiled_models Published thing models compiled and cached (at most the versions each product keeps).\n");
        out.push_str("# TYPE thingcall_compiled_models gauge\n");
        let _ = writeln!(out, "thingcall_compiled_models {compiled_models}");
        out.push_str("# HELP thingcall_signature_nonces Signature nonces remembered (each for as long as its timestamp could be accepted).\n");
        out.push_str("# TYPE thingcall_signature_nonces gauge\n");
        let _ = writeln!(out, "thingcall_signature_nonces {nonces}");
        out.push_str("# HELP thingcall_records_waiting Invocation records durable in the journal, not yet copied into the queryable store.\n");
        out.push_str("# TYPE thingcall_records_waiting gauge\n");
        let _ = writeln!(out, "thingcall_records_waiting {}", records.waiting);
        out.push_str("# HELP thingcall_record_copy_failures_total Copies of the journal into the store that failed to commit (each is retried).\n");
        out.push_str("# TYPE thingcall_record_copy_failures_total counter\n");
        let _ = writeln!(
            out,
            "thingcall_record_copy_failures_total {}",
            records.failed_copies
        );
        out.push_str(
            "# HELP thingcall_http_events_total HTTP connections and request bodies refused, by reason.\n",
        );
        out.push_str("# TYPE thingcall_http_events_total counter\n");
        for (event, n) in [
            ("connections_over_limit", &self.http_over_limit),
            ("tls_handshakes_failed", &self.https_handshakes_failed),
            ("body_timeouts", &self.http_body_timeouts),
            ("body_budget_refusals", &self.http_body_over_budget),
        ] {
            let _ = writeln!(
                out,
                "thingcall_http_events_total{{event=\"{event}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP thingcall_gateway_events_total MQTT gateway events by kind.\n");
        out.push_str("# TYPE thingcall_gateway_events_total counter\n");
        for (name, n) in gateway.snapshot() {
            let _ = writeln!(
                out,
                "thingcall_gateway_events_total{{event=\"{name}\"}} {n}"
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Labels every series of a rendered exposition with the node that made
/// it (`node="ID"`), so one Prometheus can scrape a whole cluster.
pub(crate) fn label_node(text: &str, node: &str) -> String {
    let label = format!("node=\"{}\"", escape(node));
    let mut out = String::with_capacity(text.len() + text.lines().count() * (label.len() + 3));
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let (name, rest) = line.split_at(name_end);
            out.push_str(name);
            if let Some(labels) = rest.strip_prefix('{') {
                out.push('{');
                out.push_str(&label);
                out.push(',');
                out.push_str(labels);
            } else {
                out.push('{');
                out.push_str(&label);
                out.push('}');
                out.push_str(rest);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod node_label_tests {
    use super::label_node;

    #[test]
    fn every_series_gets_the_node_and_comments_stay() {
        let text = "# HELP a A.\n# TYPE a counter\na 3\nb{kind=\"x\"} 4\n";
        assert_eq!(
            label_node(text, "n-1"),
            "# HELP a A.\n# TYPE a counter\na{node=\"n-1\"} 3\nb{node=\"n-1\",kind=\"x\"} 4\n"
        );
    }
}
