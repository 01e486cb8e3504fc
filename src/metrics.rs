//! The metrics catalogue: every metric kappa exports, in one place.
//!
//! Prometheus conventions: `kappa_` prefix, base units (seconds, records), `_total`
//! counters, bounded label sets (partition, size, reason — never ids).

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::event::InvalidKind;

/// Handles on every metric, registered in one [`Registry`].
#[derive(Clone)]
pub struct Metrics {
    /// Registry served at `/metrics`.
    pub registry: Registry,
    /// `kappa_records_consumed_total{source,partition}`.
    pub records_consumed: IntCounterVec,
    /// `kappa_late_records_total{partition}`.
    pub late_records: IntCounterVec,
    /// `kappa_duplicate_records_total{partition}`.
    pub duplicate_records: IntCounterVec,
    /// `kappa_invalid_records_total{reason}`.
    pub invalid_records: IntCounterVec,
    /// `kappa_dead_letters_total`.
    pub dead_letters: IntCounter,
    /// `kappa_partition_watermark_seconds{partition}`.
    pub partition_watermark: GaugeVec,
    /// `kappa_watermark_seconds`.
    pub watermark: Gauge,
    /// `kappa_watermark_lag_seconds`.
    pub watermark_lag: Gauge,
    /// `kappa_consumer_lag_records{partition}`.
    pub consumer_lag: IntGaugeVec,
    /// `kappa_windows_finalised_total{size}`.
    pub windows_finalised: IntCounterVec,
    /// `kappa_finalisation_delay_seconds`.
    pub finalisation_delay: Histogram,
    /// `kappa_store_commit_duration_seconds`.
    pub commit_duration: Histogram,
    /// `kappa_open_windows`.
    pub open_windows: IntGauge,
    /// `kappa_produced_records_total{sink}`.
    pub produced_records: IntCounterVec,
    /// `kappa_produce_failures_total{sink}`.
    pub produce_failures: IntCounterVec,
    /// `kappa_kafka_errors_total`.
    pub kafka_errors: IntCounter,
    /// `kappa_kafka_rebalances_total`.
    pub kafka_rebalances: IntCounter,
    /// `kappa_kafka_history_diverged`.
    pub kafka_history_diverged: IntGauge,
    /// `kappa_serving_version_info{version}`.
    pub serving_version: IntGaugeVec,
    /// `kappa_build_info{version}`.
    pub build_info: IntGaugeVec,
    /// `kappa_pipeline_up`.
    pub pipeline_up: IntGauge,
    /// `kappa_replays_active`.
    pub replays_active: IntGauge,
    /// `kappa_replay_progress_ratio{version}`.
    pub replay_progress: GaugeVec,
    /// `kappa_replay_records_total{version}`.
    pub replay_records: IntCounterVec,
    /// `kappa_audits_total{result}`: equal, mismatched, failed.
    pub audits: IntCounterVec,
    /// `kappa_audit_windows_checked_total`.
    pub audit_windows_checked: IntCounter,
    /// `kappa_audit_windows_mismatched_total`.
    pub audit_windows_mismatched: IntCounter,
    /// `kappa_workers_active` (a merger: members of the workers' group).
    pub workers_active: IntGauge,
    /// `kappa_partition_owner_info{partition,worker}` (a merger: which worker reads which
    /// source partition).
    pub partition_owner: IntGaugeVec,
    /// `kappa_stream_records_total{stream,outcome}` (streams other than the events).
    pub stream_records: IntCounterVec,
    /// `kappa_stream_watermark_seconds{stream}`.
    pub stream_watermark: GaugeVec,
    /// `kappa_stream_lag_records{stream}`.
    pub stream_lag: IntGaugeVec,
    /// `kappa_stream_windows_finalised_total{stream}`.
    pub stream_windows_finalised: IntCounterVec,
    /// `kappa_stream_open_windows{stream}`.
    pub stream_open_windows: IntGaugeVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    /// Never in practice: names are fixed and unique.
    #[must_use]
    pub fn new() -> Self {
        let r = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &r,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid"),
            )
        };
        let m = Self {
            stream_records: counter_vec(
                "kappa_stream_records_total",
                "Records of a stream other than the events (reviews), by outcome: accepted, duplicate, late, invalid, rebuilt.",
                &["stream", "outcome"],
            ),
            stream_watermark: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "kappa_stream_watermark_seconds",
                        "Watermark of a stream other than the events, unix seconds.",
                    ),
                    &["stream"],
                )
                .expect("valid"),
            ),
            stream_lag: gauge_vec(
                "kappa_stream_lag_records",
                "Records of a stream other than the events not yet read (all partitions).",
                &["stream"],
            ),
            stream_windows_finalised: counter_vec(
                "kappa_stream_windows_finalised_total",
                "Windows of a stream other than the events made final and committed.",
                &["stream"],
            ),
            stream_open_windows: gauge_vec(
                "kappa_stream_open_windows",
                "Open windows of a stream other than the events.",
                &["stream"],
            ),
            records_consumed: counter_vec(
                "kappa_records_consumed_total",
                "Records read from the log.",
                &["source", "partition"],
            ),
            late_records: counter_vec(
                "kappa_late_records_total",
                "Valid events not aggregated because they were late.",
                &["partition"],
            ),
            duplicate_records: counter_vec(
                "kappa_duplicate_records_total",
                "Events dropped as duplicates of an event_id already seen on the partition.",
                &["partition"],
            ),
            invalid_records: counter_vec(
                "kappa_invalid_records_total",
                "Records that are not valid events, by reason.",
                &["reason"],
            ),
            dead_letters: reg(
                &r,
                IntCounter::new(
                    "kappa_dead_letters_total",
                    "Records written to the dead-letter store.",
                )
                .expect("valid"),
            ),
            partition_watermark: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "kappa_partition_watermark_seconds",
                        "Per-partition watermark, unix seconds.",
                    ),
                    &["partition"],
                )
                .expect("valid"),
            ),
            watermark: reg(
                &r,
                Gauge::new(
                    "kappa_watermark_seconds",
                    "Pipeline watermark (minimum over non-idle partitions), unix seconds.",
                )
                .expect("valid"),
            ),
            watermark_lag: reg(
                &r,
                Gauge::new(
                    "kappa_watermark_lag_seconds",
                    "Wall clock minus the pipeline watermark, seconds.",
                )
                .expect("valid"),
            ),
            consumer_lag: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "kappa_consumer_lag_records",
                        "Records in the log not yet read, per partition.",
                    ),
                    &["partition"],
                )
                .expect("valid"),
            ),
            windows_finalised: counter_vec(
                "kappa_windows_finalised_total",
                "Windows made final and committed, by window size.",
                &["size"],
            ),
            finalisation_delay: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kappa_finalisation_delay_seconds",
                        "Time from the watermark passing a window's end to the window's commit.",
                    )
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                )
                .expect("valid"),
            ),
            commit_duration: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "kappa_store_commit_duration_seconds",
                        "Duration of one store write transaction (results + positions).",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                )
                .expect("valid"),
            ),
            open_windows: reg(
                &r,
                IntGauge::new(
                    "kappa_open_windows",
                    "Windows currently open (provisional).",
                )
                .expect("valid"),
            ),
            produced_records: counter_vec(
                "kappa_produced_records_total",
                "Records appended to the log by this process.",
                &["sink"],
            ),
            produce_failures: counter_vec(
                "kappa_produce_failures_total",
                "Records a sink failed to deliver.",
                &["sink"],
            ),
            kafka_errors: reg(
                &r,
                IntCounter::new(
                    "kappa_kafka_errors_total",
                    "Errors reported by the Kafka client.",
                )
                .expect("valid"),
            ),
            kafka_rebalances: reg(
                &r,
                IntCounter::new(
                    "kappa_kafka_rebalances_total",
                    "Consumer-group assignments received.",
                )
                .expect("valid"),
            ),
            kafka_history_diverged: reg(
                &r,
                IntGauge::new(
                    "kappa_kafka_history_diverged",
                    "1 once the topic no longer holds the history kappa indexed (recreated, records deleted before they were read); kappa stopped reading.",
                )
                .expect("valid"),
            ),
            serving_version: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "kappa_serving_version_info",
                        "The output version the API serves (value 1).",
                    ),
                    &["version"],
                )
                .expect("valid"),
            ),
            build_info: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("kappa_build_info", "Build information (value 1)."),
                    &["version"],
                )
                .expect("valid"),
            ),
            pipeline_up: reg(
                &r,
                IntGauge::new(
                    "kappa_pipeline_up",
                    "1 while the pipeline is consuming, 0 otherwise.",
                )
                .expect("valid"),
            ),
            replays_active: reg(
                &r,
                IntGauge::new(
                    "kappa_replays_active",
                    "Replays reading towards the log end.",
                )
                .expect("valid"),
            ),
            replay_progress: reg(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "kappa_replay_progress_ratio",
                        "Records replayed over records to replay (0-1), by output version written.",
                    ),
                    &["version"],
                )
                .expect("valid"),
            ),
            replay_records: counter_vec(
                "kappa_replay_records_total",
                "Records read by replays, by output version written.",
                &["version"],
            ),
            audits: counter_vec(
                "kappa_audits_total",
                "Audits run (kappa audit, pipeline.audit-every), by result: equal, mismatched (repaired or not), failed.",
                &["result"],
            ),
            audit_windows_checked: reg(
                &r,
                IntCounter::new(
                    "kappa_audit_windows_checked_total",
                    "Final windows audits recomputed and compared with the stored ones.",
                )
                .expect("valid"),
            ),
            audit_windows_mismatched: reg(
                &r,
                IntCounter::new(
                    "kappa_audit_windows_mismatched_total",
                    "Final windows audits found different from their recomputation.",
                )
                .expect("valid"),
            ),
            workers_active: reg(
                &r,
                IntGauge::new(
                    "kappa_workers_active",
                    "A merger: members of the workers' consumer group (0 in other roles).",
                )
                .expect("valid"),
            ),
            partition_owner: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "kappa_partition_owner_info",
                        "A merger: the worker that reads each source partition (value 1).",
                    ),
                    &["partition", "worker"],
                )
                .expect("valid"),
            ),
            registry: r,
        };
        // CPU seconds, resident and virtual memory, threads and descriptors of this process:
        // the standard process collector's `process_*` under kappa's prefix.
        #[cfg(target_os = "linux")]
        if let Ok(pid) = i32::try_from(std::process::id()) {
            m.registry
                .register(Box::new(
                    prometheus::process_collector::ProcessCollector::new(pid, "kappa"),
                ))
                .expect("process metric names are unique");
        }
        for result in ["equal", "mismatched", "failed"] {
            m.audits.with_label_values(&[result]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for k in InvalidKind::ALL {
            m.invalid_records.with_label_values(&[k.as_str()]);
        }
        // Both sinks at zero, so that the series exist before anything is produced.
        for sink in ["embedded", "kafka"] {
            m.produced_records.with_label_values(&[sink]);
            m.produce_failures.with_label_values(&[sink]);
        }
        m
    }

    /// Creates the per-partition series at zero so dashboards see them before traffic.
    pub fn init_partitions(&self, source: &str, partitions: u32) {
        for p in 0..partitions {
            let p = p.to_string();
            self.records_consumed.with_label_values(&[source, &p]);
            self.late_records.with_label_values(&[&p]);
            self.duplicate_records.with_label_values(&[&p]);
            self.consumer_lag.with_label_values(&[&p]);
        }
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
