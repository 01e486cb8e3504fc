//! From what an operator asks ([`ReplayRequest`]) to what a replay does ([`Plan`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ReplayError, SCRATCH_PREFIX};
use crate::config::{Config, fmt_duration};
use crate::event::time::{format_rfc3339_ms, parse_rfc3339_ms};
use crate::source::SourceError;
use crate::store::{Outcome, PartitionPosition, Store};

/// A replay as asked for: the flags of `kappa replay`, the fields of a plan file
/// (`replay/*.toml`), the body of `POST /api/replays`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case", default)]
pub struct ReplayRequest {
    /// `earliest`, an RFC 3339 event time, or `partition:offset,…`.
    pub from: String,
    /// RFC 3339 event time: windows starting at or after it are left alone.
    pub to: Option<String>,
    /// New output version to build; none corrects the serving version in place.
    pub version: Option<String>,
    /// Make the new version serving once it has caught up.
    pub promote: bool,
    /// Promote only if the new version compares with the serving one as this says
    /// ([`crate::compare::Gate`]: `max-changed-windows=0`, `revenue-delta<=0.1%`, …);
    /// implies `promote`.
    pub promote_if: Option<String>,
    /// Lateness bound of the replay (`2h`), instead of the version's.
    pub max_delay: Option<String>,
    /// Result-deciding configuration of a new version, as the fingerprint text of a
    /// configuration (the CLI reads `--config FILE` into it); default: the serving one's.
    pub config: Option<String>,
    /// Why (kept in the history).
    pub reason: Option<String>,
    /// The plan file it came from.
    pub plan: Option<String>,
    /// Who asked.
    pub requested_by: Option<String>,
    /// Resolve and describe only; with `diff`, also compute the correction into a scratch
    /// version, record what it would change, and discard it.
    pub dry_run: bool,
    /// Compute what an in-place correction changes (recorded with every in-place
    /// correction anyway): with `dry_run`, without applying it.
    pub diff: bool,
    /// An audit (`kappa audit`): an in-place correction whose diff recomputes the serving
    /// version's fingerprints from its stored rows (it trusts no stored hash), that swaps
    /// nothing when nothing differs, and that the audit metrics count. Without `dry_run`,
    /// it repairs.
    pub audit: bool,
}

impl ReplayRequest {
    /// An audit of the serving version's windows starting in `[from, to)`: an in-place
    /// correction that verifies the stored rows, dry unless it repairs, with reason
    /// `audit`; `max_delay` as a correction of that range had it.
    #[must_use]
    pub fn audit(
        from: String,
        to: Option<String>,
        max_delay: Option<Duration>,
        repair: bool,
        requested_by: String,
    ) -> Self {
        Self {
            from,
            to,
            max_delay: max_delay.map(fmt_duration),
            reason: Some("audit".into()),
            requested_by: Some(requested_by),
            dry_run: !repair,
            diff: true,
            audit: true,
            ..Self::default()
        }
    }
}

/// The windows of one size an in-place correction rewrites.
#[derive(Debug, Clone, Serialize)]
pub struct RewriteRange {
    /// Window size (`1m`).
    pub size: String,
    /// First window start rewritten (RFC 3339), or `null` from the beginning.
    pub from: Option<String>,
    /// Windows start before this (RFC 3339), or `null` to the end of what is final.
    pub to: Option<String>,
    /// Final windows of that size in the range now.
    pub final_windows: u64,
}

/// A resolved replay.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// What was asked.
    pub request: ReplayRequest,
    /// Version written: the new one, or the serving one for an in-place correction.
    pub version: String,
    /// In-place correction of `version`.
    pub in_place: bool,
    /// Configuration the replay computes with.
    #[serde(skip)]
    pub cfg: Config,
    /// Its result-deciding part.
    pub fingerprint: String,
    /// Window starts rewritten in place: `[from_ms, to_ms)`.
    pub from_ms: i64,
    /// See `from_ms`.
    pub to_ms: i64,
    /// Where each partition starts.
    pub starts: Vec<PartitionPosition>,
    /// Log end per partition now.
    pub ends: Vec<u64>,
    /// Records to read up to those ends.
    pub records: u64,
    /// In place: the windows rewritten, per size.
    pub rewrite: Vec<RewriteRange>,
    /// What people should know before trusting the result (an audit over windows that
    /// corrections rewrote with another configuration).
    pub notes: Vec<String>,
    /// Partitions that start from the log's record-time lookup (no event-time checkpoint
    /// of kappa's covers `--from`), and the record time looked up.
    pub by_record_time: Option<(i64, Vec<u32>)>,
    /// The declared aggregates against the serving version's: new, changed, dropped (a new
    /// version; none declared on either side: empty).
    #[serde(default)]
    pub declared: Option<(Vec<String>, Vec<String>, Vec<String>)>,
}

impl Plan {
    /// Whether every partition starts at its beginning with no history.
    #[must_use]
    pub fn from_earliest(&self) -> bool {
        self.starts
            .iter()
            .all(|p| p.next_offset == 0 && p.resume_max_ts == i64::MIN)
    }

    /// With `--to`: the end of the last window (of any size) starting in `[from, to)` —
    /// once that is final, every window of the range is.
    #[must_use]
    pub fn range_final_at(&self) -> Option<i64> {
        if self.to_ms == i64::MAX {
            return None;
        }
        let last = self.to_ms.saturating_sub(1);
        Some(
            self.cfg
                .window_config()
                .sizes_ms
                .iter()
                .map(|&size| (last - last.rem_euclid(size), size))
                .filter(|&(start, _)| start >= self.from_ms)
                .map(|(start, size)| start.saturating_add(size))
                .max()
                .unwrap_or(self.to_ms),
        )
    }

    /// Version the replay pipeline writes: the new version, or a scratch one that an
    /// in-place correction copies from.
    #[must_use]
    pub fn target_version(&self, id: u64) -> String {
        if self.in_place {
            format!("{SCRATCH_PREFIX}{id}")
        } else {
            self.version.clone()
        }
    }

    /// What the replay will do, as lines for people (`--dry-run` prints them).
    #[must_use]
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.request.audit {
            out.push(format!(
                "audit of serving version {} ({}): recomputes the range from the log and compares it with the stored rows{}",
                self.version,
                brief(&self.fingerprint),
                if self.request.dry_run {
                    ""
                } else {
                    "; windows that differ are repaired in place"
                }
            ));
        } else if self.in_place {
            out.push(format!(
                "in-place correction of serving version {} ({})",
                self.version,
                brief(&self.fingerprint)
            ));
        } else {
            out.push(format!(
                "new output version {} ({}){}",
                self.version,
                brief(&self.fingerprint),
                match (&self.request.promote_if, self.request.promote) {
                    (Some(g), _) => format!(
                        ", promoted once caught up if --promote-if {g:?} holds against the serving version"
                    ),
                    (None, true) => ", promoted once caught up".to_string(),
                    (None, false) => String::new(),
                }
            ));
        }
        if let Some((new, changed, dropped)) = &self.declared {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            out.push(format!(
                "declared aggregates against the serving version: new: {}; changed: {}; dropped: {}",
                list(new),
                list(changed),
                list(dropped)
            ));
        }
        out.push(format!(
            "start offset per partition: {}",
            self.starts
                .iter()
                .map(|p| format!("{}:{}", p.partition, p.next_offset))
                .collect::<Vec<_>>()
                .join(",")
        ));
        for note in &self.notes {
            out.push(format!(
                "note: {note}; those windows differ from this recomputation by design (audit them with that --max-delay)"
            ));
        }
        if let Some((at, parts)) = &self.by_record_time {
            out.push(format!(
                "partitions {} start at their first record written at or after {}: kappa's event-time index has no checkpoint before --from there, and no record written earlier holds a valid event from --from − max-delay on (an event more than max-future, {}, ahead of its record is invalid)",
                parts
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                format_rfc3339_ms(*at),
                fmt_duration(self.cfg.pipeline.max_future)
            ));
        }
        out.push(format!(
            "records to read: {} (log end now: {}){}",
            self.records,
            self.ends
                .iter()
                .enumerate()
                .map(|(p, e)| format!("{p}:{e}"))
                .collect::<Vec<_>>()
                .join(","),
            if self.in_place && self.range_final_at().is_some() {
                ", fewer if every window of the range is final before the end"
            } else {
                ""
            }
        ));
        if self.in_place {
            for r in &self.rewrite {
                out.push(format!(
                    "{} {} windows starting in [{}, {}): {} final now",
                    if self.request.audit {
                        "checks"
                    } else {
                        "rewrites"
                    },
                    r.size,
                    r.from.as_deref().unwrap_or("beginning"),
                    r.to.as_deref().unwrap_or("end"),
                    r.final_windows
                ));
            }
        } else {
            out.push(format!(
                "computes every window from {} on into {}",
                if self.from_earliest() {
                    "the beginning of the log".to_string()
                } else {
                    self.request.from.clone()
                },
                self.version
            ));
        }
        out
    }
}

fn invalid(m: impl Into<String>) -> ReplayError {
    ReplayError::Invalid(m.into())
}

/// Version names people give: letters, digits, `-`, `_`, `.`; not the scratch prefix.
///
/// # Errors
/// A name that is not allowed.
pub fn check_version_name(v: &str) -> Result<(), ReplayError> {
    if v.is_empty()
        || v.starts_with('_')
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(invalid(format!(
            "version {v:?}: use letters, digits, '-', '_' or '.' (not starting with '_', at most 64)"
        )));
    }
    Ok(())
}

/// The log as a plan needs it: the end per partition now, and the record-time lookup
/// ([`crate::source::offsets_for_time`]) for history kappa's event-time index does not
/// cover.
pub struct LogView<'a> {
    /// Log end per partition now.
    pub ends: Vec<u64>,
    /// Per partition, the first offset whose record time is at or after a time.
    pub by_time: Box<dyn Fn(i64) -> Result<Vec<u64>, SourceError> + 'a>,
    /// The log's incarnation now (Kafka: the topic id), when it has one.
    pub incarnation: Option<String>,
}

impl LogView<'_> {
    /// The log `cfg` names, as it is now.
    ///
    /// # Errors
    /// The log cannot be opened or the brokers not reached.
    pub fn of(cfg: &Config) -> Result<LogView<'_>, SourceError> {
        Ok(LogView {
            ends: crate::source::log_end_offsets(cfg)?,
            by_time: Box::new(move |ms| crate::source::offsets_for_time(cfg, ms)),
            incarnation: crate::source::incarnation(cfg)?,
        })
    }
}

/// Resolves `req` against the store and the log. `base` supplies everything but the
/// result-deciding settings, which come from the serving version (or from `req.config`
/// for a new version) and `req.max_delay`.
///
/// # Errors
/// [`ReplayError::Invalid`] naming what is wrong with the request; store or log failure.
pub fn resolve(
    base: &Config,
    store: &Store,
    log: &LogView<'_>,
    req: &ReplayRequest,
) -> Result<Plan, ReplayError> {
    let ends = &log.ends[..];
    let serving = store.serving()?;
    let serving_info = store.version(&serving)?;
    let in_place = req.version.is_none();
    // A topic deleted and recreated since the serving version read it: the store's
    // event-time checkpoints describe the old history.
    let recreated = match (&log.incarnation, &serving_info) {
        (Some(now), Some(info)) => store
            .incarnation(info)?
            .filter(|was| was != now)
            .map(|was| (was, now.clone())),
        _ => None,
    };
    check_request(
        store,
        req,
        &serving,
        serving_info.as_ref(),
        recreated.as_ref(),
    )?;
    let cfg = replay_config(base, req, serving_info.as_ref())?;
    let fingerprint = cfg.results_fingerprint();
    let plan = cfg.plan();
    let serving_plan = serving_info
        .as_ref()
        .and_then(|i| base.with_fingerprint(&i.config).ok())
        .map(|c| c.plan())
        .unwrap_or_default();
    let none_declared = plan.aggregates.is_empty() && serving_plan.aggregates.is_empty();
    let declared = (!in_place && !none_declared).then(|| serving_plan.changes(&plan));
    let to_ms = match &req.to {
        None => i64::MAX,
        Some(t) => parse_rfc3339_ms(t)
            .ok_or_else(|| invalid(format!("--to {t:?} is not an RFC 3339 time")))?,
    };
    let mut notes = Vec::new();
    if req.audit {
        notes = corrections_computed_otherwise(store, &req.from, to_ms, &fingerprint)?;
        if !notes.is_empty() && !req.dry_run {
            return Err(invalid(format!(
                "--repair would undo corrections made with another configuration: {}; audit that range with their --max-delay",
                notes.join("; ")
            )));
        }
    }
    let (starts, from_ms, by_record_time) =
        starts_from(&cfg, store, log, req.from.trim(), recreated.is_some())?;
    if to_ms <= from_ms {
        return Err(invalid("--to must be after --from"));
    }
    let records = starts
        .iter()
        .map(|s| ends[s.partition as usize].saturating_sub(s.next_offset))
        .sum();
    let mut rewrite = Vec::new();
    if let (true, Some(info)) = (in_place, &serving_info) {
        for size in cfg.window_config().sizes_ms {
            let hi = to_ms.min(
                info.finalized_through
                    .saturating_sub(size)
                    .saturating_add(1),
            );
            let n = if hi > from_ms {
                store.window_count(&serving, size, from_ms, hi)?
            } else {
                0
            };
            rewrite.push(RewriteRange {
                size: fmt_duration(Duration::from_millis(size.unsigned_abs())),
                from: (from_ms != i64::MIN).then(|| format_rfc3339_ms(from_ms)),
                to: (to_ms != i64::MAX).then(|| format_rfc3339_ms(to_ms)),
                final_windows: n,
            });
        }
    }
    let mut request = req.clone();
    if let Some(g) = &req.promote_if {
        crate::compare::Gate::parse(g).map_err(invalid)?;
        request.promote = true;
    }
    Ok(Plan {
        request,
        version: req.version.clone().unwrap_or(serving),
        in_place,
        cfg,
        fingerprint,
        from_ms,
        to_ms,
        starts,
        ends: ends.to_vec(),
        records,
        rewrite,
        by_record_time,
        notes,
        declared,
    })
}

/// Refuses a request that cannot be carried out as asked: a new version's name taken or
/// not allowed; an in-place correction with nothing to correct, of a recreated topic, or
/// with flags that belong to a new version (and the reverse).
fn check_request(
    store: &Store,
    req: &ReplayRequest,
    serving: &str,
    serving_info: Option<&crate::store::VersionInfo>,
    recreated: Option<&(String, String)>,
) -> Result<(), ReplayError> {
    let in_place = req.version.is_none();
    if let (true, Some((was, now))) = (in_place, recreated) {
        return Err(invalid(format!(
            "the topic was deleted and recreated since {serving} read it (id {was} then, {now} now): an in-place correction would mix two histories; replay into a new version (`--version v2 --from earliest`)"
        )));
    }
    if let Some(v) = &req.version {
        check_version_name(v)?;
        if store.version(v)?.is_some() {
            return Err(invalid(format!(
                "output version {v} already exists: pick a new name, or drop it first (`kappa versions drop {v}`)"
            )));
        }
        if req.audit {
            return Err(invalid(
                "an audit checks the serving version in place: no --version",
            ));
        }
        if req.diff {
            return Err(invalid(
                "--diff shows what an in-place correction changes in the serving version: drop --version (compare a new version with `kappa versions compare`)",
            ));
        }
        if req.to.is_some() {
            return Err(invalid(
                "--to goes with an in-place correction: a new version is complete from --from on and keeps consuming live",
            ));
        }
        return Ok(());
    }
    if serving_info.is_none() {
        return Err(invalid(format!(
            "nothing to correct: the store has no results yet (serving version {serving} was never computed)"
        )));
    }
    if req.promote || req.promote_if.is_some() {
        return Err(invalid(format!(
            "{} goes with --version (an in-place correction already writes the serving version)",
            if req.promote_if.is_some() {
                "--promote-if"
            } else {
                "--promote"
            }
        )));
    }
    if req.config.is_some() {
        return Err(invalid(
            "--config goes with --version: an in-place correction keeps the serving version's configuration (a different one is a new version)",
        ));
    }
    Ok(())
}

/// The configuration a replay computes with: the result-deciding settings of the serving
/// version (or of `req.config` for a new version), its `--max-delay`, no idleness.
fn replay_config(
    base: &Config,
    req: &ReplayRequest,
    serving_info: Option<&crate::store::VersionInfo>,
) -> Result<Config, ReplayError> {
    let fingerprint = match (&req.config, serving_info) {
        (Some(fp), _) => fp.clone(),
        (None, Some(info)) => info.config.clone(),
        (None, None) => base.results_fingerprint(),
    };
    let mut cfg = base
        .with_fingerprint(&fingerprint)
        .map_err(|e| invalid(e.0))?;
    if let Some(d) = &req.max_delay {
        cfg.pipeline.max_delay =
            humantime::parse_duration(d).map_err(|e| invalid(format!("--max-delay {d:?}: {e}")))?;
        cfg.validate().map_err(|e| invalid(e.0))?;
    }
    cfg.pipeline.idle_timeout = Duration::ZERO;
    Ok(cfg)
}

/// Where each partition starts, the first window start the replay owns, and the
/// partitions started by record time (with the time looked up).
type Starts = (Vec<PartitionPosition>, i64, Option<(i64, Vec<u32>)>);

/// A partition's start at `offset` with no history.
fn fresh(p: usize, offset: u64) -> PartitionPosition {
    PartitionPosition {
        partition: u32::try_from(p).unwrap_or(u32::MAX),
        next_offset: offset,
        resume_offset: offset,
        resume_max_ts: i64::MIN,
        max_ts: i64::MIN,
    }
}

/// The starts `--from` asks for: `earliest`, an event time (through kappa's event-time
/// index, else the log's record times; none of the index when the topic was
/// `recreated`), or `partition:offset,…`.
fn starts_from(
    cfg: &Config,
    store: &Store,
    log: &LogView<'_>,
    from: &str,
    recreated: bool,
) -> Result<Starts, ReplayError> {
    let ends = &log.ends[..];
    let partitions = ends.len();
    if from.is_empty() {
        Err(invalid(
            "--from is required: earliest, an RFC 3339 event time, or partition:offset,…",
        ))
    } else if from == "earliest" {
        Ok((
            (0..partitions).map(|p| fresh(p, 0)).collect(),
            i64::MIN,
            None,
        ))
    } else if let Some(t) = parse_rfc3339_ms(from) {
        starts_at_time(cfg, store, log, t, recreated)
    } else if from.contains(':') {
        let mut starts: Vec<PartitionPosition> = (0..partitions).map(|p| fresh(p, 0)).collect();
        for item in from.split(',') {
            let (p, o) = item
                .trim()
                .split_once(':')
                .and_then(|(p, o)| Some((p.parse::<usize>().ok()?, o.parse::<u64>().ok()?)))
                .ok_or_else(|| invalid(format!("--from: {item:?} is not partition:offset")))?;
            if p >= partitions {
                return Err(invalid(format!(
                    "--from: partition {p} does not exist (the log has {partitions})"
                )));
            }
            starts[p] = fresh(p, o.min(ends[p]));
        }
        Ok((starts, i64::MIN, None))
    } else {
        Err(invalid(format!(
            "--from {from:?}: use earliest, an RFC 3339 event time (2026-11-23T10:00:00Z), or partition:offset,…"
        )))
    }
}

/// The starts of a replay from event time `t`: per partition, the last checkpoint whose
/// max event time is below `t − max_delay` (no record before it belongs to a window
/// starting at `t` or later, and the watermark after it is the live one); where kappa's
/// index has none, the first record written at or after `t − max_delay − max_future`.
fn starts_at_time(
    cfg: &Config,
    store: &Store,
    log: &LogView<'_>,
    t: i64,
    recreated: bool,
) -> Result<Starts, ReplayError> {
    let ends = &log.ends[..];
    let delay_ms = i64::try_from(cfg.pipeline.max_delay.as_millis()).unwrap_or(i64::MAX);
    let bound = t.saturating_sub(delay_ms);
    let mut starts = Vec::with_capacity(ends.len());
    let mut uncovered = Vec::new();
    for (p, &end) in ends.iter().enumerate() {
        let cps = if recreated {
            Vec::new()
        } else {
            store.checkpoints(u32::try_from(p).unwrap_or(u32::MAX))?
        };
        let best = cps
            .iter()
            .filter(|(off, ts)| *ts < bound && *off <= end)
            .max_by_key(|(off, _)| *off);
        starts.push(match best {
            Some(&(off, ts)) => PartitionPosition {
                resume_max_ts: ts,
                max_ts: ts,
                ..fresh(p, off)
            },
            None => {
                uncovered.push(p);
                fresh(p, 0)
            }
        });
    }
    // History the index does not cover: the log's record (ingest) times. An event more
    // than max_future ahead of its record is invalid, so every record written before
    // T − max_delay − max_future holds an event before T − max_delay (or an invalid
    // one): starting after them decides every window from T as a start at 0 would.
    let mut by_record_time = None;
    if !uncovered.is_empty() {
        let max_future = i64::try_from(cfg.pipeline.max_future.as_millis()).unwrap_or(i64::MAX);
        let at = bound.saturating_sub(max_future);
        let found = (log.by_time)(at)?;
        let mut moved = Vec::new();
        for p in uncovered {
            let off = found.get(p).copied().unwrap_or(0).min(ends[p]);
            if off > 0 {
                starts[p] = fresh(p, off);
                moved.push(u32::try_from(p).unwrap_or(u32::MAX));
            }
        }
        if !moved.is_empty() {
            by_record_time = Some((at, moved));
        }
    }
    Ok((starts, t, by_record_time))
}

/// In-place corrections that completed over part of `[from, to)` with a configuration
/// other than `fingerprint` (a larger `--max-delay`, usually): an audit with
/// `fingerprint` finds the windows they rewrote different, by design. One line each.
fn corrections_computed_otherwise(
    store: &Store,
    from: &str,
    to_ms: i64,
    fingerprint: &str,
) -> Result<Vec<String>, ReplayError> {
    let start = |f: &str| parse_rfc3339_ms(f.trim()).unwrap_or(i64::MIN);
    let end = |t: Option<&String>| t.and_then(|t| parse_rfc3339_ms(t)).unwrap_or(i64::MAX);
    let from_ms = start(from);
    Ok(store
        .replays()?
        .into_iter()
        .filter(|r| {
            r.in_place
                && matches!(r.outcome, Outcome::Completed)
                && r.config != fingerprint
                && start(&r.from) < to_ms
                && end(r.to.as_ref()) > from_ms
        })
        .map(|r| {
            format!(
                "replay {} rewrote windows in [{}, {}) computed with {}",
                r.id,
                r.from,
                r.to.as_deref().unwrap_or("end"),
                r.config
            )
        })
        .collect())
}

/// A configuration fingerprint for a plan's first line: its declared aggregates by name
/// only (their declarations can run to kilobytes; the next line says which are new,
/// changed or dropped).
fn brief(fingerprint: &str) -> String {
    fingerprint
        .split_whitespace()
        .map(|item| {
            let declared = item
                .strip_prefix("aggregates=")
                .and_then(|v| serde_json::from_str::<Vec<crate::declared::Declaration>>(v).ok());
            match declared {
                Some(ds) => {
                    let names: Vec<&str> = ds.iter().map(|d| d.name.as_str()).collect();
                    format!("aggregates=[{}]", names.join(","))
                }
                None => item.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
