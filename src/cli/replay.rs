//! `kappa replay …` and `kappa versions …`: through the running server's control API when
//! one holds the store, in the foreground otherwise — with the same output.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::client::{Access, access};
use super::text::printable;
use crate::config::Config;
use crate::control::{self, list_versions, view_of_record};
use crate::metrics::Metrics;
use crate::replay::{Job, LogView, ReplayRequest, ReplayView, resolve};
use crate::store::{Outcome, Store};

/// `kappa replay`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ReplayArgs {
    /// Follow-up commands (status, cancel, history).
    #[command(subcommand)]
    pub action: Option<ReplayAction>,
    /// Where to start: `earliest`, an RFC 3339 event time, or `partition:offset,…`.
    #[arg(long, value_name = "FROM")]
    pub from: Option<String>,
    /// In-place corrections: windows starting at or after this event time are left alone.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Build a new output version (default: correct the serving version in place).
    #[arg(long = "version", value_name = "NAME")]
    pub output_version: Option<String>,
    /// Make the new version serving once it has caught up.
    #[arg(long)]
    pub promote: bool,
    /// Promote the new version once caught up only if, compared with the serving one on
    /// their common final windows, this holds: `max-changed-windows=N`,
    /// `max-changed-declared-windows=N` (of the aggregates both declare), `revenue-delta<=X%`
    /// or `revenue-delta<=X` (comma-separated, all must hold).
    #[arg(long, value_name = "CONDITION")]
    pub promote_if: Option<String>,
    /// Lateness bound of the replay (e.g. 2h), to take in events that were late live.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub max_delay: Option<Duration>,
    /// A plan file (replay/<name>.toml: from, to, version, promote, promote_if, max_delay,
    /// config, reason); flags given as well override it.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Why (kept in the replay history).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Who asks (kept in the replay history; default: the user this process runs as).
    #[arg(long, value_name = "NAME")]
    pub requested_by: Option<String>,
    /// Print the start offset per partition, the windows rewritten and the records to read;
    /// change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also print what the correction changes, per window and aggregate (with --dry-run:
    /// computed into a scratch version and discarded; the serving version is untouched).
    #[arg(long)]
    pub diff: bool,
    /// With a running server: return once the replay has started.
    #[arg(long)]
    pub detach: bool,
    /// URL of the running kappa (default: http.listen, used when it holds the store).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The stream to recompute: `events` (the default; every option above), or `reviews`:
    /// the reviews of the version a live run computes (the serving one, or
    /// `pipeline.version`), from the beginning of their log, in place (in the foreground,
    /// with no server holding the store).
    #[arg(long, default_value = "events", value_parser = crate::stream::Stream::parse)]
    pub stream: crate::stream::Stream,
}

/// `kappa audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// First window start audited (RFC 3339 event time).
    #[arg(long, value_name = "TIME")]
    pub from: String,
    /// Windows starting at or after this are not audited [default: every final window
    /// from --from on].
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Rewrite the windows that differ with their recomputation, as an in-place
    /// correction (recorded in the replay history with reason `audit`).
    #[arg(long)]
    pub repair: bool,
    /// Lateness bound of the recomputation [default: the serving version's]: a range that
    /// an in-place correction rewrote with a larger `--max-delay` is audited with that one.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub max_delay: Option<Duration>,
    /// The result as JSON: replay number, result, counts and the recorded diff.
    #[arg(long)]
    pub json: bool,
    /// Who asks (kept in the replay history; default: the user this process runs as).
    #[arg(long, value_name = "NAME")]
    pub requested_by: Option<String>,
    /// URL of the running kappa (default: http.listen, used when it holds the store).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// `kappa replay status|cancel|history`.
#[derive(Debug, Subcommand)]
pub enum ReplayAction {
    /// Progress of one replay (per partition done/total, records/s, ETA), or of all.
    Status {
        /// Replay number.
        id: Option<u64>,
        /// Follow it until it ends (a progress bar in a terminal, lines otherwise).
        #[arg(long)]
        watch: bool,
        /// The whole replay as JSON (the API's answer) instead of the table.
        #[arg(long)]
        json: bool,
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// One replay's record and the diff recorded with it (what an in-place correction
    /// changed, or what a `--dry-run --diff` would have).
    Show {
        /// Replay number.
        id: u64,
        /// Output format.
        #[arg(long, value_enum, default_value_t = super::read::Format::Table)]
        format: super::read::Format,
        /// Every differing window with every changed row (the recorded diff lists at most
        /// 100 windows of 100 rows), read page by page.
        #[arg(long)]
        full: bool,
        /// With --full: the first differing window shown (0 = the oldest).
        #[arg(long, default_value_t = 0, requires = "full")]
        offset: u64,
        /// With --full: at most this many windows.
        #[arg(long, requires = "full")]
        limit: Option<u64>,
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Stop a running replay (an in-place correction leaves every window as it was).
    Cancel {
        /// Replay number.
        id: u64,
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Every replay recorded: who, why, when, range, outcome.
    History {
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
}

/// `kappa versions …`.
#[derive(Debug, Subcommand)]
pub enum VersionsCommand {
    /// Name, configuration, positions, lag, serving mark and size of each output version.
    List {
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Compare two versions on their common final windows: per window and aggregate, rows
    /// added, removed and changed (deltas, rank moves), with a summary.
    Compare {
        /// Old side.
        a: String,
        /// New side.
        b: String,
        /// First window start (RFC 3339 or epoch ms).
        #[arg(long, value_name = "TIME")]
        from: Option<String>,
        /// Windows starting at or after this are left out.
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// Changed rows listed per window (all are counted).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Differing windows listed (all are counted).
        #[arg(long, default_value_t = 100)]
        windows: usize,
        /// The comparison as JSON (the API's answer).
        #[arg(long)]
        json: bool,
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Make a version serving (the API and Grafana read it).
    Promote {
        /// Version.
        version: String,
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Delete a version and free its data (refused for the serving version).
    Drop {
        /// Version.
        version: String,
        /// URL of the running kappa.
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
}

/// A plan file: the fields of a replay, and the configuration file of a new version.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    from: Option<String>,
    to: Option<String>,
    version: Option<String>,
    #[serde(default)]
    promote: bool,
    promote_if: Option<String>,
    max_delay: Option<String>,
    config: Option<PathBuf>,
    reason: Option<String>,
}

/// Who asks: `--requested-by`, else the user this process runs as (`$USER`, `$LOGNAME`,
/// else the name `/etc/passwd` gives its uid, else `uid N`).
fn who(given: Option<&String>) -> String {
    if let Some(w) = given.filter(|w| !w.trim().is_empty()) {
        return w.trim().to_string();
    }
    if let Some(u) = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|u| !u.is_empty())
    {
        return u;
    }
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "unknown".into();
    };
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// The request the flags (over the plan file) describe.
fn request(
    cfg: &Config,
    config_file: Option<&Path>,
    a: &ReplayArgs,
) -> anyhow::Result<ReplayRequest> {
    let mut file = PlanFile::default();
    if let Some(p) = &a.plan {
        let text = std::fs::read_to_string(p)
            .with_context(|| format!("reading the plan {}", p.display()))?;
        file = toml::from_str(&text).map_err(|e| {
            anyhow::anyhow!("plan {}: {}", p.display(), e.message().replace('\n', " "))
        })?;
    }
    let version = a.output_version.clone().or(file.version);
    // The configuration of a new version: the plan's file (relative to the plan), else
    // --config; an in-place correction keeps the serving version's.
    let config = match (&version, &file.config, &a.plan, config_file) {
        (None, Some(_), _, _) => {
            anyhow::bail!(
                "plan: `config` goes with `version` (an in-place correction keeps the serving configuration)"
            )
        }
        (Some(_), Some(c), Some(plan), _) => {
            let path = plan.parent().unwrap_or(Path::new(".")).join(c);
            let path = if path.is_file() { path } else { c.clone() };
            Some(Config::load(Some(&path), &json!({}))?.results_fingerprint())
        }
        (Some(_), _, _, Some(_)) => Some(cfg.results_fingerprint()),
        _ => None,
    };
    let from = a.from.clone().or(file.from).ok_or_else(|| {
        anyhow::anyhow!(
            "--from is required: earliest, an RFC 3339 event time, or partition:offset,…"
        )
    })?;
    Ok(ReplayRequest {
        from,
        to: a.to.clone().or(file.to),
        version,
        promote: a.promote || file.promote,
        promote_if: a.promote_if.clone().or(file.promote_if),
        max_delay: a
            .max_delay
            .map(crate::config::fmt_duration)
            .or(file.max_delay),
        config,
        reason: a.reason.clone().or(file.reason),
        plan: a.plan.as_ref().map(|p| p.display().to_string()),
        requested_by: Some(who(a.requested_by.as_ref())),
        dry_run: a.dry_run,
        diff: a.diff,
        audit: false,
    })
}

fn parse_view(body: &[u8]) -> anyhow::Result<ReplayView> {
    let v: Value = serde_json::from_slice(body)?;
    view_from_json(&v)
}

fn view_from_json(v: &Value) -> anyhow::Result<ReplayView> {
    let record = serde_json::from_value(v.clone()).context("reading the replay")?;
    let partitions = v["partitions"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| crate::replay::PartitionProgress {
                    partition: p["partition"].as_u64().unwrap_or(0).try_into().unwrap_or(0),
                    done: p["done"].as_u64().unwrap_or(0),
                    total: p["total"].as_u64().unwrap_or(0),
                    position: p["position"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ReplayView {
        record,
        active: v["active"].as_bool().unwrap_or(false),
        progress: v["progress"].as_f64().unwrap_or(0.0),
        done: v["done"].as_u64().unwrap_or(0),
        total: v["total"].as_u64().unwrap_or(0),
        rate: v["rate"].as_f64().unwrap_or(0.0),
        eta_seconds: v["eta_seconds"].as_f64(),
        partitions,
    })
}

/// Shows progress until `next` says the replay ended: a bar on a terminal, a line every
/// two seconds otherwise. Looks again every 200 ms.
fn follow(next: impl FnMut() -> anyhow::Result<ReplayView>) -> anyhow::Result<ReplayView> {
    follow_until(next, || std::thread::sleep(Duration::from_millis(200)))
}

/// [`follow`], with `pause` between two looks (a replay running here ends the pause when it
/// ends, so the command returns at once).
fn follow_until(
    mut next: impl FnMut() -> anyhow::Result<ReplayView>,
    mut pause: impl FnMut(),
) -> anyhow::Result<ReplayView> {
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} records {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    });
    let mut last_line = std::time::Instant::now();
    loop {
        let v = next()?;
        let msg = format!(
            "{:.0}/s ETA {}",
            v.rate,
            v.eta_seconds
                .map_or_else(|| "-".into(), |s| format!("{s:.0}s"))
        );
        if let Some(b) = &bar {
            b.set_prefix(format!("replay {}", v.record.id));
            b.set_length(v.total);
            b.set_position(v.done);
            b.set_message(msg);
        } else if last_line.elapsed() >= Duration::from_secs(2) || !v.active {
            eprintln!(
                "replay {}: {:.1}% ({}/{} records) {msg} [{}]",
                v.record.id,
                v.progress * 100.0,
                v.done,
                v.total,
                v.partitions
                    .iter()
                    .map(|p| format!("{}:{}/{}", p.partition, p.done, p.total))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            last_line = std::time::Instant::now();
        }
        if !v.active {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(v);
        }
        pause();
    }
}

fn print_outcome(v: &ReplayView) -> std::io::Result<()> {
    let r = &v.record;
    let secs = r
        .ended_ms
        .map_or(0.0, |e| (e - r.started_ms) as f64 / 1000.0);
    out!(
        "replay {} {}: {} records in {secs:.1} s ({:.0} records/s); {} windows {}",
        r.id,
        printable(&r.outcome.to_string()),
        r.records,
        if secs > 0.0 {
            r.records as f64 / secs
        } else {
            0.0
        },
        r.windows,
        printable(
            &(if r.in_place {
                "rewritten in "
            } else {
                "final in "
            }
            .to_string()
                + &r.version)
        )
    );
    Ok(())
}

/// `kappa replay`.
///
/// # Errors
/// A bad request, or the replay failed.
pub fn replay(cfg: &Config, config_file: Option<&Path>, a: &ReplayArgs) -> anyhow::Result<()> {
    if let Some(action) = &a.action {
        return replay_action(cfg, action);
    }
    match a.stream {
        crate::stream::Stream::Events => {}
        crate::stream::Stream::Reviews => return replay_reviews(cfg, a),
        crate::stream::Stream::Clicks => anyhow::bail!(
            "--stream clicks: the clicks are replayed with the events: `kappa replay --from earliest --version NEW` recomputes the aggregates declared on them into the new version"
        ),
        crate::stream::Stream::Products => anyhow::bail!(
            "--stream products: the catalogue has no results to replay; it is read whole at every start (replay the events to join them with it again)"
        ),
    }
    let req = request(cfg, config_file, a)?;
    if let Some((access, id)) = submit(cfg, &req, a.server.as_ref(), a.detach)?
        && req.diff
    {
        print_diff(&access, id)?;
    }
    Ok(())
}

/// `kappa replay --stream reviews`: the serving version's reviews recomputed in place.
fn replay_reviews(cfg: &Config, a: &ReplayArgs) -> anyhow::Result<()> {
    if a.output_version.is_some()
        || a.to.is_some()
        || a.dry_run
        || a.diff
        || a.plan.is_some()
        || a.promote
        || a.promote_if.is_some()
        || a.max_delay.is_some()
        || a.detach
        || a.from.as_deref().is_some_and(|f| f != "earliest")
    {
        anyhow::bail!(
            "--stream reviews recomputes the serving version's reviews from the beginning (--from earliest); --version, --to, --dry-run, --diff, --plan, --promote, --max-delay and --detach are for the events"
        );
    }
    let Access::Local(store) = access(cfg, a.server.as_ref())? else {
        anyhow::bail!(
            "a running kappa holds the store: stop it first (a replay of the reviews runs in the foreground)"
        );
    };
    // The configuration and version a live run would compute (the serving version's
    // stored window settings, `reviews.min-reviews` as given).
    let (cfg, version) = crate::server::main_version(cfg, &store, false)?;
    let cfg = &cfg;
    let cancel = tokio_util::sync::CancellationToken::new();
    {
        let c = cancel.clone();
        let _ = super::produce::ctrlc_hook(move || c.cancel());
    }
    let started = std::time::Instant::now();
    let r = crate::pipeline::replay_reviews(cfg, &store, &version, &cancel)?;
    out!(
        "replay of the reviews of {version}: {} reviews read ({} accepted, {} late, {} duplicates, {} invalid), {} windows final, in {:.1} s",
        r.counts.read,
        r.counts.accepted,
        r.counts.late,
        r.counts.duplicates,
        r.counts.invalid.iter().sum::<u64>(),
        r.windows,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Carries `req` out on the running server (through its control API) or, when none holds
/// the store, here in the foreground; prints its plan, its progress and its outcome.
/// Returns where it ran and its number once it has ended, or `None` when nothing ran to an
/// end here (a dry run without a diff; `detach`).
///
/// # Errors
/// A bad request; the replay failed, was cancelled, or was not promoted as asked.
fn submit(
    cfg: &Config,
    req: &ReplayRequest,
    server: Option<&String>,
    detach: bool,
) -> anyhow::Result<Option<(Access, u64)>> {
    match access(cfg, server)? {
        Access::Remote(server) => {
            let body = serde_json::to_value(req)?;
            let resp: Value = serde_json::from_slice(&server.call(
                "POST",
                "/api/replays",
                Some(&body),
                &cfg.http.token,
            )?)?;
            for line in resp["lines"].as_array().into_iter().flatten() {
                out!("{}", printable(line.as_str().unwrap_or_default()));
            }
            if req.dry_run && !req.diff {
                out!("dry run: nothing changed");
                return Ok(None);
            }
            let id = resp["id"]
                .as_u64()
                .context("the server did not say the replay's id")?;
            out!(
                "replay {id} started on the running kappa at {}",
                server.base
            );
            if detach {
                out!("follow it with `kappa replay status {id} --watch`");
                return Ok(None);
            }
            let path = format!("/api/replays/{id}");
            let v = follow(|| parse_view(&server.get(&path)?))?;
            print_outcome(&v)?;
            let access = Access::Remote(server);
            print_refused_gate(&access, &v)?;
            fail_unless_done(&v)?;
            Ok(Some((access, id)))
        }
        Access::Local(store) => {
            Ok(foreground(cfg, &store, req)?.map(|id| (Access::Local(store), id)))
        }
    }
}

/// `kappa audit`.
///
/// # Errors
/// A bad request, the audit failed, or windows differ and were not repaired.
pub fn audit(cfg: &Config, a: &AuditArgs) -> anyhow::Result<()> {
    let req = ReplayRequest::audit(
        a.from.clone(),
        a.to.clone(),
        a.max_delay,
        a.repair,
        who(a.requested_by.as_ref()),
    );
    let (access, id) =
        submit(cfg, &req, a.server.as_ref(), false)?.context("the audit did not run to its end")?;
    let diff =
        replay_diff(&access, id)?.with_context(|| format!("audit {id} recorded no comparison"))?;
    let s = &diff.summary;
    let result = match (s.windows_differing, a.repair) {
        (0, _) => "equal",
        (_, true) => "repaired",
        (_, false) => "mismatched",
    };
    if a.json {
        out!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "replay": id,
                "version": diff.a,
                "result": result,
                "windows_checked": s.windows_compared,
                "windows_differing": s.windows_differing,
                "diff": diff,
            }))?
        );
    } else if s.windows_differing == 0 {
        out!(
            "audit {id}: {} final windows of {} checked, every one equal to its recomputation from the log",
            s.windows_compared,
            printable(&diff.a)
        );
    } else {
        print_recorded(id, Some(&diff))?;
        out!(
            "audit {id}: {} of {} final windows of {} differ from their recomputation from the log; {}",
            s.windows_differing,
            s.windows_compared,
            printable(&diff.a),
            if a.repair {
                "repaired in place (replay history: reason audit)"
            } else {
                "not repaired (add --repair to rewrite them)"
            }
        );
    }
    if result == "mismatched" {
        anyhow::bail!(
            "audit {id}: {} windows differ (not repaired)",
            s.windows_differing
        );
    }
    Ok(())
}

/// Versions `a` (default: the serving one) and `b` compared on their common final windows
/// in `range` (`--from`, `--to` as given), listing at most `limit.1` windows of `limit.0`
/// changed rows: here, or by the running server.
fn comparison(
    access: &Access,
    a: Option<&String>,
    b: &str,
    range: (Option<&String>, Option<&String>),
    limit: (usize, usize),
) -> anyhow::Result<crate::compare::Comparison> {
    Ok(match access {
        Access::Local(store) => {
            let a = crate::query::output_version(store, a.map(String::as_str))?;
            let b = crate::query::output_version(store, Some(b))?;
            let scope = crate::compare::Scope {
                from: super::read::time_flag("--from", range.0, i64::MIN)?,
                to: super::read::time_flag("--to", range.1, i64::MAX)?,
                rows_per_window: limit.0,
                max_windows: limit.1,
                ..crate::compare::Scope::default()
            };
            let range = (scope.from, scope.to);
            let mut c = crate::compare::compare(store, &a, &b, scope)?;
            c.declared = crate::query::compare_declared(store, &a, &b, range, limit.1)?;
            c
        }
        Access::Remote(server) => {
            let (rows, windows) = (limit.0.to_string(), limit.1.to_string());
            serde_json::from_slice(&server.get(&format!(
                "/api/versions/compare{}",
                super::read::query_string(&[
                    ("a", a.map(String::as_str)),
                    ("b", Some(b)),
                    ("from", range.0.map(String::as_str)),
                    ("to", range.1.map(String::as_str)),
                    ("limit", Some(&rows)),
                    ("windows", Some(&windows)),
                ])
            ))?)?
        }
    })
}

/// After a promotion gate refused a version: how it differs from the serving one, from
/// the replay's `--from` on (what the gate compared), 10 windows of 10 rows at most.
fn print_refused_gate(access: &Access, v: &ReplayView) -> anyhow::Result<()> {
    if !matches!(v.record.outcome, Outcome::CaughtUpNotPromoted(_)) {
        return Ok(());
    }
    let from = crate::event::time::parse_rfc3339_ms(&v.record.from)
        .is_some()
        .then_some(&v.record.from);
    let c = comparison(access, None, &v.record.version, (from, None), (10, 10))?;
    let more = format!("kappa versions compare {} {}", c.a, c.b);
    for line in crate::compare::describe(&c, &more) {
        out!("{}", printable(&line));
    }
    Ok(())
}

/// A replay that did not get to its end (failed, cancelled), or whose new version was not
/// promoted as asked (`--promote-if` did not hold), is an error exit.
fn fail_unless_done(v: &ReplayView) -> anyhow::Result<()> {
    let outcome = &v.record.outcome;
    if let Outcome::CaughtUpNotPromoted(why) = outcome {
        anyhow::bail!(
            "replay {}: {} caught up but is not serving: {}",
            v.record.id,
            printable(&v.record.version),
            printable(why)
        );
    }
    if matches!(outcome, Outcome::Failed(_) | Outcome::Cancelled(_)) {
        anyhow::bail!(
            "replay {} {outcome}{}",
            v.record.id,
            if v.record.in_place {
                ": the serving version is as it was"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// No server: this process opens the store and runs the replay; returns its number
/// once it has ended (`None`: a dry run without a diff).
fn foreground(cfg: &Config, store: &Store, req: &ReplayRequest) -> anyhow::Result<Option<u64>> {
    control::recover_interrupted(store)?;
    let plan = resolve(cfg, store, &LogView::of(cfg)?, req)?;
    for line in plan.describe() {
        out!("{}", printable(&line));
    }
    if req.dry_run && !req.diff {
        out!("dry run: nothing changed");
        return Ok(None);
    }
    let id = control::next_replay_id(store)?;
    let job = Job::start(store, plan, id)?;
    out!("replay {id} started (no kappa server holds the store: running here; Ctrl-C cancels)");
    let metrics = Metrics::new();
    let cancel = job.cancel.clone();
    let _ = ctrlc_cancel(cancel);
    let (j, st, c) = (job.clone(), store.clone(), cfg.clone());
    let worker = std::thread::Builder::new()
        .name("replay".into())
        .spawn(move || {
            let open = |v: &str, cancel: &tokio_util::sync::CancellationToken| {
                crate::source::open(
                    &c,
                    Arc::new(st.clone()),
                    v,
                    crate::source::Assignment::Explicit,
                    Arc::new(Metrics::new()),
                    &|| cancel.is_cancelled(),
                )
            };
            j.run(&st, &metrics, &open, false)
        })?;
    let v = follow_until(
        || Ok(job.view()),
        || {
            let until = std::time::Instant::now() + Duration::from_millis(200);
            while !worker.is_finished() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        },
    )?;
    let result = worker
        .join()
        .map_err(|_| anyhow::anyhow!("the replay thread panicked"))?;
    let v = if v.active { job.view() } else { v };
    print_outcome(&v)?;
    result?;
    print_refused_gate(&Access::Local(store.clone()), &v)?;
    fail_unless_done(&v)?;
    Ok(Some(id))
}

/// Ctrl-C cancels a foreground replay (it then commits what it did and cleans up).
fn ctrlc_cancel(cancel: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        eprintln!("cancelling the replay");
                        cancel.cancel();
                    }
                });
            }
        })?;
    Ok(())
}

fn history_table(views: &[ReplayView]) -> std::io::Result<()> {
    out!(
        "{:>4}  {:<10} {:<8} {:<26} {:<26} {:<20} {:>10}  {:<20} reason",
        "id",
        "version",
        "kind",
        "from",
        "to",
        "started",
        "records",
        "outcome"
    );
    for v in views {
        let r = &v.record;
        out!(
            "{:>4}  {:<10} {:<8} {:<26} {:<26} {:<20} {:>10}  {:<20} {}{}",
            r.id,
            printable(&r.version),
            if r.in_place { "in-place" } else { "version" },
            printable(&r.from),
            printable(r.to.as_deref().unwrap_or("-")),
            crate::event::time::format_rfc3339_ms(r.started_ms)
                .get(..19)
                .unwrap_or_default(),
            r.records,
            printable(&if v.active {
                Outcome::Running.to_string()
            } else {
                r.outcome.to_string()
            }),
            printable(&r.reason),
            if r.requested_by.is_empty() {
                String::new()
            } else {
                format!(" ({})", printable(&r.requested_by))
            }
        );
    }
    Ok(())
}

/// Every replay: the history, from the store or from the running server.
fn all_replays(access: &Access) -> anyhow::Result<Vec<ReplayView>> {
    match access {
        Access::Local(store) => Ok(store.replays()?.iter().map(view_of_record).collect()),
        Access::Remote(server) => {
            let v: Value = serde_json::from_slice(&server.get("/api/replays")?)?;
            v["replays"]
                .as_array()
                .into_iter()
                .flatten()
                .map(view_from_json)
                .collect()
        }
    }
}

/// One replay (the server answers with its live progress).
fn one_replay(access: &Access, id: u64) -> anyhow::Result<ReplayView> {
    match access {
        Access::Local(_) => all_replays(access)?
            .into_iter()
            .find(|v| v.record.id == id)
            .ok_or_else(|| anyhow::anyhow!("no replay {id}")),
        Access::Remote(server) => parse_view(&server.get(&format!("/api/replays/{id}"))?),
    }
}

/// The diff recorded with replay `id`, if any.
fn replay_diff(access: &Access, id: u64) -> anyhow::Result<Option<crate::compare::Comparison>> {
    let json = match access {
        Access::Local(store) => store.replay_diff(id)?,
        Access::Remote(server) => match server.get(&format!("/api/replays/{id}/diff")) {
            Ok(body) => Some(body),
            Err(e) if e.to_string().contains("404") => None,
            Err(e) => return Err(e),
        },
    };
    json.map(|j| serde_json::from_slice(&j).context("reading the recorded diff"))
        .transpose()
}

/// The full diff recorded with replay `id`: its differing windows from `offset` on (at
/// most `limit`), every changed row listed, read 100 windows at a time.
fn full_diff_windows(
    access: &Access,
    id: u64,
    offset: u64,
    limit: Option<u64>,
) -> anyhow::Result<Vec<crate::compare::WindowDiff>> {
    let end = limit.map_or(u64::MAX, |l| offset.saturating_add(l));
    let mut out = Vec::new();
    let mut at = offset;
    while at < end {
        let want = (end - at).min(100);
        let (page, total): (Vec<Value>, u64) = match access {
            Access::Local(store) => {
                let (page, total) = store.replay_diff_windows(id, at, want)?;
                let page = page
                    .iter()
                    .map(|j| serde_json::from_slice(j))
                    .collect::<Result<_, _>>()?;
                (page, total)
            }
            Access::Remote(server) => {
                let v: Value = serde_json::from_slice(&server.get(&format!(
                    "/api/replays/{id}/diff/windows?offset={at}&limit={want}"
                ))?)?;
                (
                    v["windows"].as_array().cloned().unwrap_or_default(),
                    v["total"].as_u64().unwrap_or(0),
                )
            }
        };
        if page.is_empty() {
            break;
        }
        at += page.len() as u64;
        for w in page {
            out.push(serde_json::from_value(w).context("reading the recorded diff")?);
        }
        if at >= total {
            break;
        }
    }
    Ok(out)
}

/// Prints the diff recorded with replay `id` (after a replay run with `--diff`).
fn print_diff(access: &Access, id: u64) -> anyhow::Result<()> {
    Ok(print_recorded(id, replay_diff(access, id)?.as_ref())?)
}

/// Prints `diff`, recorded with replay `id`, or that it has none.
fn print_recorded(id: u64, diff: Option<&crate::compare::Comparison>) -> std::io::Result<()> {
    match diff {
        Some(d) => {
            let more = format!("every one: kappa replay show {id} --full");
            for line in crate::compare::describe(d, &more) {
                out!("{}", printable(&line));
            }
        }
        None => out!("no diff recorded with replay {id}"),
    }
    Ok(())
}

fn replay_action(cfg: &Config, action: &ReplayAction) -> anyhow::Result<()> {
    match action {
        ReplayAction::Status {
            id,
            watch,
            json,
            server,
        } => replay_status(cfg, *id, *watch, *json, server.as_ref()),
        ReplayAction::Cancel { id, server } => match access(cfg, server.as_ref())? {
            Access::Remote(server) => {
                let v = parse_view(&server.call(
                    "DELETE",
                    &format!("/api/replays/{id}"),
                    None,
                    &cfg.http.token,
                )?)?;
                print_outcome(&v)?;
                Ok(())
            }
            // No server: nothing runs in the background; a new version a process that died
            // left being built can still be cancelled (a foreground replay stops with Ctrl-C).
            Access::Local(store) => {
                let v = control::cancel_unfinished(&store, *id)?;
                print_outcome(&v)?;
                Ok(())
            }
        },
        ReplayAction::Show {
            id,
            format,
            full,
            offset,
            limit,
            server,
        } => replay_show(cfg, *id, *format, (*full, *offset, *limit), server.as_ref()),
        ReplayAction::History { server } => {
            let views = all_replays(&access(cfg, server.as_ref())?)?;
            history_table(&views)?;
            Ok(())
        }
    }
}

/// `kappa versions …`.
///
/// # Errors
/// Unknown version, the serving one for `drop`, store or server failure.
pub fn versions(cfg: &Config, cmd: &VersionsCommand) -> anyhow::Result<()> {
    match cmd {
        VersionsCommand::List { server } => versions_list(cfg, server.as_ref()),
        VersionsCommand::Compare {
            a,
            b,
            from,
            to,
            limit,
            windows,
            json,
            server,
        } => {
            for (flag, n) in [("--limit", *limit), ("--windows", *windows)] {
                if !(1..=10_000).contains(&n) {
                    anyhow::bail!("{flag} must be between 1 and 10000, got {n}");
                }
            }
            let c = comparison(
                &access(cfg, server.as_ref())?,
                Some(a),
                b,
                (from.as_ref(), to.as_ref()),
                (*limit, *windows),
            )?;
            if *json {
                out!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                let more = "raise --limit or --windows, or narrow --from/--to";
                for line in crate::compare::describe(&c, more) {
                    out!("{line}");
                }
            }
            Ok(())
        }
        VersionsCommand::Promote { version, server } => {
            match access(cfg, server.as_ref())? {
                Access::Local(store) => store.promote(version)?,
                Access::Remote(server) => {
                    server.call(
                        "POST",
                        &format!("/api/versions/{version}/promote"),
                        None,
                        &cfg.http.token,
                    )?;
                }
            }
            out!("{} is serving", printable(version));
            Ok(())
        }
        VersionsCommand::Drop { version, server } => {
            match access(cfg, server.as_ref())? {
                Access::Local(store) => store.drop_version(version)?,
                Access::Remote(server) => {
                    server.call(
                        "DELETE",
                        &format!("/api/versions/{version}"),
                        None,
                        &cfg.http.token,
                    )?;
                }
            }
            out!("{} dropped", printable(version));
            Ok(())
        }
    }
}

/// `kappa replay status`: the active replays, or one (`--watch` follows it).
fn replay_status(
    cfg: &Config,
    id: Option<u64>,
    watch: bool,
    json: bool,
    server: Option<&String>,
) -> anyhow::Result<()> {
    let access = access(cfg, server)?;
    let fetch_all = || all_replays(&access);
    let fetch = |id: u64| one_replay(&access, id);
    match id {
        None => history_table(
            &fetch_all()?
                .into_iter()
                .filter(|v| v.active)
                .collect::<Vec<_>>(),
        )?,
        Some(id) if watch => {
            let v = follow(|| fetch(id))?;
            print_outcome(&v)?;
        }
        Some(id) if json => {
            out!("{}", serde_json::to_string_pretty(&fetch(id)?)?);
        }
        Some(id) => {
            let v = fetch(id)?;
            history_table(std::slice::from_ref(&v))?;
            out!(
                "progress {:.1}% ({}/{} records){}",
                v.progress * 100.0,
                v.done,
                v.total,
                if v.active { " — active" } else { "" }
            );
            for p in &v.partitions {
                out!(
                    "  partition {:>3}: {}/{} records, next offset {}",
                    p.partition,
                    p.done,
                    p.total,
                    p.position
                );
            }
        }
    }
    Ok(())
}

/// `kappa replay show ID`: its record and the diff it recorded (`--full`: the full one, a
/// page of `--offset`/`--limit`).
fn replay_show(
    cfg: &Config,
    id: u64,
    format: super::read::Format,
    (full, offset, limit): (bool, u64, Option<u64>),
    server: Option<&String>,
) -> anyhow::Result<()> {
    let access = access(cfg, server)?;
    let v = one_replay(&access, id)?;
    let mut diff = replay_diff(&access, id)?;
    if let (Some(d), true) = (&mut diff, full) {
        let all = full_diff_windows(&access, id, offset, limit)?;
        // Replays recorded before the full diff was kept have the bounded one only.
        if !all.is_empty() || d.summary.windows_differing == 0 || offset > 0 {
            d.windows = all;
            d.windows_truncated = false;
        } else {
            eprintln!(
                "replay {id} has no full diff recorded (it was made before kappa kept them): the bounded one follows"
            );
        }
    }
    if format == super::read::Format::Json {
        let mut out = serde_json::to_value(&v)?;
        out["diff"] = diff
            .map(serde_json::to_value)
            .transpose()?
            .unwrap_or_default();
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    history_table(std::slice::from_ref(&v))?;
    print_recorded(id, diff.as_ref())?;
    Ok(())
}

/// `kappa versions list`: a table of the output versions.
fn versions_list(cfg: &Config, server: Option<&String>) -> anyhow::Result<()> {
    let list: Value = match access(cfg, server)? {
        Access::Local(store) => {
            let ends = crate::source::log_end_offsets(cfg)?;
            json!({ "versions": list_versions(&store, &ends)? })
        }
        Access::Remote(server) => serde_json::from_slice(&server.get("/api/versions")?)?,
    };
    if list["versions"].as_array().is_none_or(Vec::is_empty) {
        out!(
            "no output versions yet: `kappa run` computes v1, `kappa replay --from earliest --version NAME` another"
        );
        return Ok(());
    }
    out!(
        "{:<2}{:<12} {:>12} {:>10} {:<22} {:<28} {:<17} config",
        "",
        "version",
        "lag",
        "size",
        "final through",
        "positions",
        "digest"
    );
    for v in list["versions"].as_array().into_iter().flatten() {
        let positions: Vec<String> = v["positions"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(p, o)| format!("{p}:{}", o.as_u64().unwrap_or(0)))
            .collect();
        out!(
            "{:<2}{:<12} {:>12} {:>10} {:<22} {:<28} {:<17} {}",
            if v["serving"].as_bool() == Some(true) {
                "*"
            } else {
                ""
            },
            printable(v["name"].as_str().unwrap_or_default()),
            v["lag"].as_u64().unwrap_or(0),
            human_bytes(v["size_bytes"].as_u64().unwrap_or(0)),
            // To the second, in UTC (`--json`/the API have the milliseconds).
            v["finalized_through"]
                .as_str()
                .and_then(|t| t.get(..19))
                .map_or_else(|| "-".to_string(), |t| format!("{t}Z")),
            positions.join(","),
            // The first 16 hex digits: enough to tell versions apart by eye
            // (`kappa fingerprint` prints all 32).
            v["digest"].as_str().unwrap_or("-").get(..16).unwrap_or("-"),
            printable(v["config"].as_str().unwrap_or_default())
        );
    }
    out!("(* serving)");
    Ok(())
}

fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.1} GB", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1} MB", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1} kB", f / 1e3)
    } else {
        format!("{n} B")
    }
}
