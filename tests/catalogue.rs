//! The catalogue join on the real binary, the classic Kappa case: catalogue entries that
//! arrive after the events they should have enriched. The live results keep what they had
//! (those events dead-lettered), a replay into a new version joins them, and equals a run
//! that had the whole catalogue from the start.

mod common;

use common::*;

/// Session documents whose purchases leave their category and price to the catalogue.
const EVENTS: [&str; 9] = [
    "produce",
    "--rate",
    "0",
    "--events",
    "20000",
    "--seed",
    "9",
    "--products",
    "40",
];

fn produce_events(dir: &std::path::Path) {
    let mut c = kappa(dir);
    c.args(EVENTS).args(["--session-docs", "0.3"]);
    ok(c);
}

fn produce_catalogue(dir: &std::path::Path, file: &std::path::Path) {
    let mut c = kappa(dir);
    c.args(["produce", "--stream", "products", "--input"])
        .arg(file);
    ok(c);
}

/// The generator's catalogue as JSON lines in `dir`: all of it, and split into the
/// entries of two products (the late ones) and the others (the early ones).
struct Catalogue {
    all: std::path::PathBuf,
    early: std::path::PathBuf,
    late: std::path::PathBuf,
}

fn catalogue(dir: &std::path::Path) -> Catalogue {
    let all = dir.join("catalogue.jsonl");
    let mut c = kappa(dir);
    c.args([
        "produce",
        "--stream",
        "products",
        "--seed",
        "9",
        "--products",
        "40",
    ])
    .arg("--output")
    .arg(&all);
    ok(c);
    let text = std::fs::read_to_string(&all).unwrap();
    let (late, early): (Vec<&str>, Vec<&str>) = text
        .lines()
        .partition(|l| l.contains(r#""product_id":"p_7""#) || l.contains(r#""product_id":"p_12""#));
    assert!(!late.is_empty() && !early.is_empty());
    let c = Catalogue {
        early: dir.join("early.jsonl"),
        late: dir.join("late.jsonl"),
        all,
    };
    std::fs::write(&c.late, late.join("\n")).unwrap();
    std::fs::write(&c.early, early.join("\n")).unwrap();
    c
}

#[test]
fn late_catalogue_entries_leave_live_results_as_they_were_and_a_replay_fixes_them() {
    let files = temp();
    let Catalogue {
        all,
        early: early_file,
        late: late_file,
    } = catalogue(files.path());

    // Live: the catalogue lacks two products when their purchases are read.
    let live = temp();
    produce_catalogue(live.path(), &early_file);
    produce_events(live.path());
    let out = run_drain(live.path(), &[]);
    let missing: Vec<_> = dead_letters(live.path())
        .into_iter()
        .filter(|d| d["kind"] == "no_catalogue_entry")
        .collect();
    assert!(!missing.is_empty(), "{out}");
    assert!(
        missing.iter().all(|d| {
            let r = d["reason"].as_str().unwrap();
            r.contains("no catalogue entry for p_7") || r.contains("no catalogue entry for p_12")
        }),
        "{missing:?}"
    );
    let v1_before = export_version(live.path(), "v1");

    // The entries arrive; the live results stay as they were.
    produce_catalogue(live.path(), &late_file);
    run_drain(live.path(), &[]);
    assert_eq!(export_version(live.path(), "v1"), v1_before);

    // A replay into a new version joins them.
    let mut c = kappa(live.path());
    c.args([
        "replay",
        "--from",
        "earliest",
        "--version",
        "v2",
        "--reason",
        "catalogue caught up",
    ]);
    ok(c);
    let v2 = export_version(live.path(), "v2");

    // The batch answer: the whole catalogue before any event.
    let batch = temp();
    produce_catalogue(batch.path(), &all);
    produce_events(batch.path());
    let out = run_drain(batch.path(), &[]);
    assert!(out.contains(", 0 invalid"), "{out}");
    // The replay's windows (those final when it caught up: it does not drain) are the
    // batch run's.
    let window = |l: &String| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        (v["size"].to_string(), v["window_start"].to_string())
    };
    let replayed: std::collections::BTreeSet<_> = v2.iter().map(window).collect();
    assert!(replayed.len() > 1, "{replayed:?}");
    let expected: Vec<String> = export_version(batch.path(), "v1")
        .into_iter()
        .filter(|l| replayed.contains(&window(l)))
        .collect();
    assert!(
        v2 == expected,
        "the replay differs from the run with the whole catalogue"
    );
    let before: Vec<String> = v1_before
        .into_iter()
        .filter(|l| replayed.contains(&window(l)))
        .collect();
    assert!(before != expected, "the late entries changed nothing");
}

/// A restart re-reads the events of the windows still open: they are joined with the
/// catalogue as it was when they were first read, not with entries that arrived since
/// (which only events read after them see). So stopping and starting again changes
/// nothing: the results equal a run that never saw the late entries.
#[test]
fn a_restart_joins_re_read_events_as_they_were_joined_before() {
    let files = temp();
    let Catalogue {
        early: early_file,
        late: late_file,
        ..
    } = catalogue(files.path());

    // Without a restart: the early catalogue only.
    let reference = temp();
    produce_catalogue(reference.path(), &early_file);
    produce_events(reference.path());
    run_drain(reference.path(), &[]);

    // Read up to the log end (the hour window stays open), then the late entries arrive,
    // then a restart finishes the run.
    let restarted = temp();
    produce_catalogue(restarted.path(), &early_file);
    produce_events(restarted.path());
    let mut c = kappa(restarted.path());
    c.args(["run", "--until-caught-up", "--listen", "127.0.0.1:0"]);
    ok(c);
    produce_catalogue(restarted.path(), &late_file);
    run_drain(restarted.path(), &[]);

    assert!(
        export_version(restarted.path(), "v1") == export_version(reference.path(), "v1"),
        "the restart joined re-read events with entries that arrived after them"
    );
    assert_eq!(
        dead_letters(restarted.path()).len(),
        dead_letters(reference.path()).len()
    );
}
