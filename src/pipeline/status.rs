//! What the pipeline shares with the HTTP server while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use serde::Serialize;

use crate::window::FinalWindow;

/// One partition's progress.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// Next offset to read.
    pub position: u64,
    /// Log end offset when last looked at.
    pub end_offset: u64,
    /// `end_offset − position`.
    pub lag: u64,
    /// Partition watermark (epoch ms), absent before its first event.
    pub watermark_ms: Option<i64>,
    /// Declared idle (not holding the pipeline watermark back).
    pub idle: bool,
    /// Read by this process (Kafka: assigned to it in the consumer group).
    pub owned: bool,
}

/// What a pipeline (or a worker, a merger) is doing, as `/api/status` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Waiting for the Kafka brokers (version and source not known yet).
    Connecting,
    /// Opened, nothing read yet.
    #[default]
    Starting,
    /// Re-reading records to rebuild the open windows after a restart or a rebalance.
    Recovering,
    /// Consuming.
    Running,
    /// A bounded run reached the log end.
    CaughtUp,
    /// Stopped on request.
    Stopped,
    /// Stopped by an error (`error` says which).
    Failed,
    /// Commits fail (a full disk): retrying, reading nothing new.
    Stalled,
    /// The Kafka topic no longer holds the history kappa indexed: reading stopped.
    Diverged,
}

impl State {
    /// The name `/api/status` and the live page show.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Starting => "starting",
            Self::Recovering => "recovering",
            Self::Running => "running",
            Self::CaughtUp => "caught-up",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Stalled => "stalled",
            Self::Diverged => "diverged",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The pipeline's progress, refreshed after every commit and on a timer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// What it is doing.
    pub state: State,
    /// Output version being computed.
    pub version: String,
    /// Source kind (`embedded`, `kafka`).
    pub source: String,
    /// Pipeline watermark (epoch ms), absent until every active partition has one.
    pub watermark_ms: Option<i64>,
    /// Every window ending at or before this is final.
    pub finalized_through_ms: Option<i64>,
    /// Records read by this process.
    pub records: u64,
    /// Valid events aggregated.
    pub accepted: u64,
    /// Late events.
    pub late: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Invalid records dead-lettered.
    pub invalid: u64,
    /// Windows finalised by this process.
    pub windows_finalised: u64,
    /// Open windows.
    pub open_windows: usize,
    /// Last error, if the pipeline failed.
    pub error: Option<String>,
    /// Per partition.
    pub partitions: Vec<PartitionStatus>,
}

/// State shared between the pipeline thread and readers (HTTP, demo printer).
#[derive(Debug, Default)]
pub struct Shared {
    /// Latest status.
    pub status: Mutex<Status>,
    /// The open windows in final form, refreshed about once a second.
    pub provisional: RwLock<Vec<FinalWindow>>,
    ready: AtomicBool,
}

impl Shared {
    /// Whether the pipeline is consuming normally.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Sets readiness.
    pub fn set_ready(&self, v: bool) {
        self.ready.store(v, Ordering::Relaxed);
    }

    /// A copy of the status.
    #[must_use]
    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }
}
