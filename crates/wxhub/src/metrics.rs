//! Prometheus metrics in the text exposition format.
//!
//! Labels are appids, kinds, results, routes and client *names*: never a
//! key, token or secret. A small hand-rolled registry keeps the dependency
//! count down; the hot path is one mutex-protected map update.
//!
//! Series must not grow with the number of accounts: above
//! `metrics.per_account_limit` accounts the registry drops the `appid`
//! label from everything it counts, so counters become aggregates, and the
//! per-account gauges (written at scrape time by `Credentials`) cover only
//! the accounts that need attention.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Inner {
    // Keyed by a hash of (name, labels) so the hot path (a counter that
    // already exists) allocates nothing; entries keep their labels to tell
    // a collision from a hit.
    counters: std::collections::HashMap<u64, Vec<(&'static str, Labels, u64)>>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    // Keyed like the counters: an observation allocates nothing.
    histograms: std::collections::HashMap<u64, Vec<(&'static str, Labels, Histogram)>>,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The most labels a series has.
const MAX_LABELS: usize = 4;

const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The registry.
pub struct Metrics {
    inner: Mutex<Inner>,
    // Whether counters and gauges keep their `appid` label.
    per_account: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::default(),
            per_account: AtomicBool::new(true),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "wxhub_refresh_total",
        "counter",
        "Credential refreshes by result.",
    ),
    (
        "wxhub_upstream_duration_seconds",
        "histogram",
        "Latency of calls to the WeChat platform.",
    ),
    (
        "wxhub_foreign_refresh_total",
        "counter",
        "Tokens the platform rejected before their expiry though the hub did not replace them: another system fetched or forced a token for the same account.",
    ),
    (
        "wxhub_forced_refresh_total",
        "counter",
        "Forced stable_token refreshes.",
    ),
    (
        "wxhub_reports_total",
        "counter",
        "Reports of a rejected credential (invalidate, the proxy) by outcome: already_replaced, still_valid, replaced, over_budget, unavailable.",
    ),
    (
        "wxhub_caller_refresh_refused_total",
        "counter",
        "Refreshes a report would have triggered but the caller budget refused, by the limit that refused.",
    ),
    (
        "wxhub_oauth_states_refused_total",
        "counter",
        "Sign-ins refused because the account holds oauth.max_pending_states states.",
    ),
    (
        "wxhub_rate_limited_total",
        "counter",
        "Requests refused with 429, by limit (proxy, invalidate, anonymous) and client name.",
    ),
    (
        "wxhub_http_requests_total",
        "counter",
        "HTTP requests by client name, route and status.",
    ),
    (
        "wxhub_proxy_retries_total",
        "counter",
        "Proxied calls retried once after a token error.",
    ),
    (
        "wxhub_redis_up",
        "gauge",
        "Shared mode: 1 while Redis answers, 0 while it does not.",
    ),
    (
        "wxhub_lease_acquired_total",
        "counter",
        "Shared mode: refresh leases this instance took over.",
    ),
    (
        "wxhub_lease_lost_total",
        "counter",
        "Shared mode: refresh leases this instance lost to another.",
    ),
    (
        "wxhub_lease_handed_over_total",
        "counter",
        "Shared mode: refresh leases this instance gave up to balance the instances.",
    ),
    (
        "wxhub_fenced_write_rejected_total",
        "counter",
        "Shared mode: fetched values Redis refused because a newer lease holder exists.",
    ),
    (
        "wxhub_component_events_total",
        "counter",
        "Pushes to a third-party platform's /component/{appid}/events, by event (component_verify_ticket, authorized, updateauthorized, unauthorized, other, rejected).",
    ),
    (
        "wxhub_component_push_restarts_total",
        "counter",
        "Third-party platforms asked to restart their verify-ticket pushes (api_start_push_ticket) after an hour without a ticket.",
    ),
    (
        "wxhub_push_received_total",
        "counter",
        "Pushes accepted at /push/{appid}, by result: new or duplicate.",
    ),
    (
        "wxhub_push_rejected_total",
        "counter",
        "Pushes refused at /push/{appid}, by reason (signature, appid, xml, stale, overloaded, ...).",
    ),
    (
        "wxhub_push_ack_seconds",
        "histogram",
        "Time from a push's arrival to the answer to the platform, durable write included.",
    ),
    (
        "wxhub_push_replies_total",
        "counter",
        "Passive replies, by result: replied, none, late, failed.",
    ),
    (
        "wxhub_push_deliveries_total",
        "counter",
        "Delivery attempts to subscribers, by result: delivered, failed, parked, dropped (queue full).",
    ),
    (
        "wxhub_push_backlog",
        "gauge",
        "Entries waiting per subscriber, by state: queued or parked.",
    ),
    (
        "wxhub_push_profile_fetches_total",
        "counter",
        "Follower profiles read from /cgi-bin/user/info for subscribe events, by result.",
    ),
];

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the `appid` label (`true`) or drops it from everything
    /// recorded from now on, forgetting the series that carry it.
    pub fn set_per_account(&self, on: bool) {
        if self.per_account.swap(on, Ordering::Relaxed) == on || on {
            return;
        }
        self.forget(|l| l.iter().any(|(k, _)| *k == "appid"));
    }

    /// Forgets every series of a removed account. Without this they stayed
    /// in `/metrics` until a restart, so a hub whose accounts come and go
    /// at run time grew its registry and every scrape without bound.
    pub fn forget_account(&self, appid: &str) {
        self.forget(|l| l.iter().any(|(k, v)| *k == "appid" && v == appid));
    }

    /// Forgets every series of a subscriber taken off an account, its
    /// backlog gauges among them: their last values would otherwise stay
    /// (a parked count still alerting for a subscriber no longer there).
    pub fn forget_subscriber(&self, appid: &str, subscriber: &str) {
        self.forget(|l| {
            l.iter().any(|(k, v)| *k == "appid" && v == appid)
                && l.iter().any(|(k, v)| *k == "subscriber" && v == subscriber)
        });
    }

    /// Drops the series whose labels match, and the hash buckets left
    /// empty (a bucket per series ever recorded would otherwise remain).
    fn forget(&self, matches: impl Fn(&Labels) -> bool) {
        let mut inner = self.lock();
        for bucket in inner.counters.values_mut() {
            bucket.retain(|(_, l, _)| !matches(l));
        }
        inner.counters.retain(|_, b| !b.is_empty());
        inner.gauges.retain(|(_, l), _| !matches(l));
        for bucket in inner.histograms.values_mut() {
            bucket.retain(|(_, l, _)| !matches(l));
        }
        inner.histograms.retain(|_, b| !b.is_empty());
    }

    /// Whether per-account series are kept.
    pub fn per_account(&self) -> bool {
        self.per_account.load(Ordering::Relaxed)
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let mut buf = [("", ""); MAX_LABELS];
        let labels = self.labels(labels, &mut buf);
        let h = key_hash(name, labels);
        let mut inner = self.lock();
        let bucket = inner.counters.entry(h).or_default();
        match bucket
            .iter_mut()
            .find(|(n, l, _)| *n == name && same(l, labels))
        {
            Some(entry) => entry.2 += 1,
            None => bucket.push((name, own(labels), 1)),
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let mut buf = [("", ""); MAX_LABELS];
        let labels = self.labels(labels, &mut buf);
        self.lock().gauges.insert((name, own(labels)), value);
    }

    /// The labels as recorded: without `appid` when per-account series are
    /// off. Copied into `buf`, so recording still allocates nothing.
    fn labels<'a>(
        &self,
        labels: &'a [(&'static str, &'a str)],
        buf: &'a mut [(&'static str, &'a str); MAX_LABELS],
    ) -> &'a [(&'static str, &'a str)] {
        if self.per_account() || labels.iter().all(|(k, _)| *k != "appid") {
            return labels;
        }
        let mut n = 0;
        for l in labels
            .iter()
            .filter(|(k, _)| *k != "appid")
            .take(MAX_LABELS)
        {
            buf[n] = *l;
            n += 1;
        }
        &buf[..n]
    }

    /// Records one observation in seconds.
    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], seconds: f64) {
        let mut buf = [("", ""); MAX_LABELS];
        let labels = self.labels(labels, &mut buf);
        let key = key_hash(name, labels);
        let mut inner = self.lock();
        let bucket = inner.histograms.entry(key).or_default();
        let at = match bucket
            .iter()
            .position(|(n, l, _)| *n == name && same(l, labels))
        {
            Some(at) => at,
            None => {
                bucket.push((name, own(labels), Histogram::default()));
                bucket.len() - 1
            }
        };
        let h = &mut bucket[at].2;
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.buckets[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// A counter's value (for tests and the console).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let mut buf = [("", ""); MAX_LABELS];
        let labels = self.labels(labels, &mut buf);
        self.lock()
            .counters
            .get(&key_hash(name, labels))
            .and_then(|b| b.iter().find(|(n, l, _)| *n == name && same(l, labels)))
            .map_or(0, |e| e.2)
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let mut counters: Vec<(&Labels, u64)> = inner
                .counters
                .values()
                .flatten()
                .filter(|(n, _, _)| n == name)
                .map(|(_, l, v)| (l, *v))
                .collect();
            counters.sort();
            for (labels, v) in counters {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
            }
            for ((n, labels), v) in &inner.gauges {
                if n == name {
                    let _ = writeln!(out, "{name}{} {v}", fmt_labels(labels, None));
                }
            }
            let mut histograms: Vec<(&Labels, &Histogram)> = inner
                .histograms
                .values()
                .flatten()
                .filter(|(n, _, _)| n == name)
                .map(|(_, l, h)| (l, h))
                .collect();
            histograms.sort_by(|a, b| a.0.cmp(b.0));
            for (labels, h) in histograms {
                {
                    for (i, b) in BUCKETS.iter().enumerate() {
                        let le = b.to_string();
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            fmt_labels(labels, Some(&le)),
                            h.buckets[i]
                        );
                    }
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(labels, Some("+Inf")),
                        h.count
                    );
                    let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
                }
            }
        }
        out
    }
}

fn key_hash(name: &str, labels: &[(&'static str, &str)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    for (k, v) in labels {
        k.hash(&mut h);
        v.hash(&mut h);
    }
    h.finish()
}

fn same(owned: &Labels, labels: &[(&'static str, &str)]) -> bool {
    owned.len() == labels.len()
        && owned
            .iter()
            .zip(labels)
            .all(|((a, b), (c, d))| a == c && b == d)
}

fn own(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Writes a metric family's `# HELP` and `# TYPE` lines, for series
/// written at scrape time outside the registry.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one sample, for series written at scrape time.
pub fn sample(out: &mut String, name: &str, labels: &[(&'static str, &str)], value: f64) {
    let _ = writeln!(out, "{name}{} {value}", fmt_labels(&own(labels), None));
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}=\"{}\"",
                v.replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n")
            )
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_account_leaves_no_series_and_the_others_stay() {
        let m = Metrics::default();
        for appid in ["wx1", "wx2"] {
            m.inc("wxhub_refresh_total", &[("appid", appid), ("result", "ok")]);
            m.set(
                "wxhub_push_backlog",
                &[("appid", appid), ("subscriber", "crm")],
                3.0,
            );
            m.observe("wxhub_push_ack_seconds", &[("appid", appid)], 0.01);
        }
        m.inc(
            "wxhub_http_requests_total",
            &[("client", "crm"), ("route", "/x"), ("status", "200")],
        );
        m.forget_account("wx1");
        let text = m.render();
        assert!(!text.contains("wx1"), "{text}");
        assert_eq!(text.matches("appid=\"wx2\"").count(), 15, "{text}");
        assert!(text.contains("wxhub_http_requests_total{"), "{text}");
        let inner = m.lock();
        assert_eq!(inner.counters.len(), 2, "empty buckets are dropped too");
        assert_eq!(inner.histograms.len(), 1);
    }

    #[test]
    fn a_forgotten_subscriber_leaves_only_its_own_series() {
        let m = Metrics::default();
        for (appid, sub) in [("wx1", "crm"), ("wx1", "bot"), ("wx2", "crm")] {
            let labels = [
                ("appid", appid),
                ("subscriber", sub),
                ("result", "delivered"),
            ];
            m.inc("wxhub_push_deliveries_total", &labels);
            let labels = [("appid", appid), ("subscriber", sub), ("state", "parked")];
            m.set("wxhub_push_backlog", &labels, 1.0);
        }
        m.forget_subscriber("wx1", "crm");
        let text = m.render();
        assert!(!text.contains("appid=\"wx1\",subscriber=\"crm\""), "{text}");
        assert_eq!(text.matches("subscriber=\"bot\"").count(), 2, "{text}");
        assert_eq!(
            text.matches("appid=\"wx2\",subscriber=\"crm\"").count(),
            2,
            "{text}"
        );
    }

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.inc("wxhub_refresh_total", &[("appid", "wx1"), ("result", "ok")]);
        m.inc("wxhub_refresh_total", &[("appid", "wx1"), ("result", "ok")]);
        m.set("wxhub_redis_up", &[], 1.0);
        m.observe(
            "wxhub_upstream_duration_seconds",
            &[("endpoint", "/cgi-bin/token")],
            0.02,
        );
        let text = m.render();
        assert!(
            text.contains("wxhub_refresh_total{appid=\"wx1\",result=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("wxhub_redis_up 1"), "{text}");
        assert!(text.contains(
            "wxhub_upstream_duration_seconds_bucket{endpoint=\"/cgi-bin/token\",le=\"0.025\"} 1"
        ));
        assert!(
            text.contains("wxhub_upstream_duration_seconds_count{endpoint=\"/cgi-bin/token\"} 1")
        );
        assert_eq!(
            m.counter("wxhub_refresh_total", &[("appid", "wx1"), ("result", "ok")]),
            2
        );
    }

    #[test]
    fn above_the_limit_counters_lose_their_appid_and_old_series_go() {
        let m = Metrics::default();
        m.inc("wxhub_refresh_total", &[("appid", "wx1"), ("result", "ok")]);
        m.set_per_account(false);
        m.inc("wxhub_refresh_total", &[("appid", "wx1"), ("result", "ok")]);
        m.inc("wxhub_refresh_total", &[("appid", "wx2"), ("result", "ok")]);
        let text = m.render();
        assert!(!text.contains("wx1") && !text.contains("wx2"), "{text}");
        assert!(
            text.contains("wxhub_refresh_total{result=\"ok\"} 2"),
            "{text}"
        );
        m.set_per_account(true);
        m.inc("wxhub_refresh_total", &[("appid", "wx1"), ("result", "ok")]);
        assert!(m.render().contains("appid=\"wx1\""));
    }
}
