//! The version lifecycle: every check-then-act on versions, the serving pointer and
//! replays happens in the one write transaction that acts.

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("kappa.redb")).unwrap();
    (dir, store)
}

fn version(name: &str, state: VersionState) -> VersionInfo {
    VersionInfo {
        name: name.into(),
        config: "cfg".into(),
        created_ms: 0,
        finalized_through: i64::MIN,
        state,
    }
}

fn record(id: u64, version: &str, in_place: bool) -> ReplayRecord {
    ReplayRecord {
        id,
        version: version.into(),
        in_place,
        from: "earliest".into(),
        to: None,
        config: "cfg".into(),
        plan: None,
        reason: String::new(),
        requested_by: String::new(),
        started_ms: 0,
        ended_ms: None,
        starts: vec![0],
        ends: vec![10],
        records: 0,
        windows: 0,
        outcome: Outcome::Running,
    }
}

fn names(store: &Store) -> Vec<String> {
    store
        .versions()
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect()
}

#[test]
fn promote_and_drop_raced_never_leave_the_serving_pointer_on_a_dropped_version() {
    let (_dir, store) = store();
    store
        .ensure_version(&version("v1", VersionState::Ready))
        .unwrap();
    let mut both_ok = 0;
    for round in 0..400 {
        if store.version("v2").unwrap().is_none() {
            store
                .create_version(&version("v2", VersionState::Ready), &[])
                .unwrap();
        }
        store.promote("v1").unwrap();
        let barrier = std::sync::Barrier::new(2);
        let (promoted, dropped) = std::thread::scope(|s| {
            let p = s.spawn(|| {
                barrier.wait();
                store.promote("v2").is_ok()
            });
            let d = s.spawn(|| {
                barrier.wait();
                store.drop_version("v2").is_ok()
            });
            (p.join().unwrap(), d.join().unwrap())
        });
        let serving = store.serving().unwrap();
        assert!(
            names(&store).contains(&serving),
            "round {round}: serving {serving} is not a version (promoted {promoted}, dropped {dropped})"
        );
        both_ok += u32::from(promoted && dropped);
    }
    // Both may succeed only in the order drop-then-… which fails promote; never both.
    assert_eq!(
        both_ok, 0,
        "promote and drop of the same version both succeeded"
    );
}

#[test]
fn a_version_being_built_or_dropped_cannot_be_promoted_or_dropped() {
    let (_dir, store) = store();
    store
        .ensure_version(&version("v1", VersionState::Ready))
        .unwrap();
    let building = VersionState::Building {
        replay: 3,
        promote: false,
    };
    store.create_version(&version("v2", building), &[]).unwrap();
    for e in [
        store.begin_drop("v2").unwrap_err(),
        store.promote("v2").unwrap_err(),
    ] {
        assert!(
            matches!(&e, StoreError::Mismatch(m) if m.contains("replay 3")),
            "{e}"
        );
    }
    assert!(
        store.version("v2").unwrap().is_some(),
        "refused: nothing dropped"
    );
    // Holding the store alone, no replay runs: its version goes, the replay is cancelled.
    store.record_replay(&record(3, "v2", false)).unwrap();
    store.drop_version("v2").unwrap();
    assert!(store.version("v2").unwrap().is_none());
    assert!(matches!(
        store.replays().unwrap()[0].outcome,
        Outcome::Cancelled(Some(_))
    ));
    store
        .create_version(&version("v3", VersionState::Ready), &[])
        .unwrap();
    store.begin_drop("v3").unwrap();
    assert!(matches!(
        store.promote("v3").unwrap_err(),
        StoreError::Mismatch(m) if m.contains("being dropped")
    ));
    store.remove_unfinished().unwrap();
    assert!(
        store.version("v3").unwrap().is_none(),
        "removed at the next start"
    );
    assert!(matches!(
        store.drop_version("nosuch").unwrap_err(),
        StoreError::NoVersion(_)
    ));
}

#[test]
fn promoting_while_the_serving_version_is_corrected_in_place_is_refused() {
    let (_dir, store) = store();
    store
        .ensure_version(&version("v1", VersionState::Ready))
        .unwrap();
    store
        .create_version(&version("v2", VersionState::Ready), &[])
        .unwrap();
    let scratch = VersionState::Correcting {
        replay: 7,
        target: "v1".into(),
    };
    store
        .create_version(&version("_replay-7", scratch), &[])
        .unwrap();
    let e = store.promote("v2").unwrap_err();
    assert!(
        matches!(&e, StoreError::Mismatch(m) if m.contains("replay 7")),
        "{e}"
    );
    assert_eq!(store.serving().unwrap(), "v1");
    // Neither may the corrected version be dropped, nor the scratch be named.
    assert!(store.drop_version("v1").is_err());
    assert!(matches!(
        store.promote("_replay-7").unwrap_err(),
        StoreError::NoVersion(_)
    ));
    // A new version promised promotion catches up meanwhile: not promoted, and says why.
    let building = VersionState::Building {
        replay: 8,
        promote: true,
    };
    store.create_version(&version("v3", building), &[]).unwrap();
    let mut r = record(8, "v3", false);
    r.outcome = Outcome::CaughtUpPromoted;
    store
        .end_replay(
            &mut r,
            ReplayEnd::CaughtUp {
                version: "v3",
                gate: None,
            },
        )
        .unwrap();
    assert_eq!(store.serving().unwrap(), "v1");
    assert!(
        matches!(&r.outcome, Outcome::CaughtUpNotPromoted(why) if why.contains("replay 7")),
        "{}",
        r.outcome
    );
    assert_eq!(store.replays().unwrap()[0].outcome, r.outcome);
    assert_eq!(
        store.version("v3").unwrap().unwrap().state,
        VersionState::Ready
    );
}

#[test]
fn a_caught_up_build_keeps_its_promise_and_its_record_in_one_transaction() {
    let (_dir, store) = store();
    store
        .ensure_version(&version("v1", VersionState::Ready))
        .unwrap();
    let building = VersionState::Building {
        replay: 1,
        promote: true,
    };
    store.create_version(&version("v2", building), &[]).unwrap();
    let mut r = record(1, "v2", false);
    r.outcome = Outcome::CaughtUpPromoted;
    store
        .end_replay(
            &mut r,
            ReplayEnd::CaughtUp {
                version: "v2",
                gate: None,
            },
        )
        .unwrap();
    assert_eq!(store.serving().unwrap(), "v2");
    assert_eq!(store.replays().unwrap(), vec![r]);
}

/// A store with version `v1` and `_replay-2`, the scratch of a correction of `v1` by replay 2.
fn store_with_scratch() -> (tempfile::TempDir, Store) {
    let (dir, store) = store();
    store
        .ensure_version(&version("v1", VersionState::Ready))
        .unwrap();
    let scratch = VersionState::Correcting {
        replay: 2,
        target: "v1".into(),
    };
    store
        .create_version(&version("_replay-2", scratch), &[])
        .unwrap();
    (dir, store)
}

#[test]
fn a_swap_writes_the_windows_the_outcome_and_removes_the_scratch_together() {
    let (_dir, store) = store_with_scratch();
    let mut r = record(2, "v1", true);
    r.outcome = Outcome::Completed;
    store
        .end_replay(
            &mut r,
            ReplayEnd::Swap {
                scratch: "_replay-2",
                from_ms: i64::MIN,
                to_ms: i64::MAX,
                audit: false,
                declared: None,
            },
        )
        .unwrap();
    assert_eq!(names(&store), ["v1"], "the scratch went with the swap");
    assert_eq!(store.replays().unwrap()[0].outcome, Outcome::Completed);
    // A swap that cannot be carried out writes nothing, not even the record.
    let mut bad = record(3, "v1", true);
    bad.outcome = Outcome::Completed;
    assert!(
        store
            .end_replay(
                &mut bad,
                ReplayEnd::Swap {
                    scratch: "v1",
                    from_ms: 0,
                    to_ms: 1,
                    audit: false,
                    declared: None,
                },
            )
            .is_err()
    );
    assert_eq!(store.replays().unwrap().len(), 1);
}

/// An audit of `v1` whose scratch lacks `v1`'s one declared window (and whose built-in
/// windows agree, having none), ended with `declared` as its declared comparison: whether
/// `v1` still has the window afterwards.
fn audit_keeps_the_declared_window(declared: Option<&compare::DeclaredComparison>) -> bool {
    let (_dir, store) = store_with_scratch();
    let finals = [crate::declared::DeclaredFinal {
        size_ms: 60_000,
        start_ms: 0,
        aggregates: vec![("a".into(), Vec::new())],
    }];
    for (v, declared) in [("v1", &finals[..]), ("_replay-2", &[][..])] {
        store
            .commit(&Commit {
                version: v,
                finalized_through: 3_600_000,
                declared,
                declared_through: Some(3_600_000),
                ..Commit::default()
            })
            .unwrap();
    }
    let mut r = record(2, "v1", true);
    r.outcome = Outcome::Completed;
    let end = ReplayEnd::Swap {
        scratch: "_replay-2",
        from_ms: 0,
        to_ms: i64::MAX,
        audit: true,
        declared: None,
    };
    store
        .end_replay(&mut r, end.with_declared(declared))
        .unwrap();
    !store.all_declared("v1").unwrap().is_empty()
}

#[test]
fn an_audit_repairs_declared_windows_that_alone_differ() {
    let differs = compare::DeclaredComparison {
        compared: 1,
        only_in_a: 1,
        differing_count: 1,
        ..Default::default()
    };
    assert!(!audit_keeps_the_declared_window(Some(&differs)));
    // Nothing differing anywhere: an audit copies nothing.
    let same = compare::DeclaredComparison {
        compared: 1,
        ..Default::default()
    };
    assert!(audit_keeps_the_declared_window(Some(&same)));
    assert!(audit_keeps_the_declared_window(None));
}

#[test]
fn stores_written_before_version_states_still_open() {
    let (_dir, store) = store();
    let old = encode(&("v1", "cfg", 5i64, 7i64));
    let tx = store.db().unwrap().begin_write().unwrap();
    tx.open_table(VERSIONS)
        .unwrap()
        .insert("v1", old.as_slice())
        .unwrap();
    tx.commit().unwrap();
    let v = store.version("v1").unwrap().unwrap();
    assert_eq!((v.created_ms, v.finalized_through), (5, 7));
    assert_eq!(v.state, VersionState::Ready);
}

#[test]
fn outcomes_read_back_as_the_text_they_were_stored_as() {
    for text in [
        "running",
        "completed",
        "caught-up",
        "caught-up, promoted",
        "caught-up, not promoted: replay 3 was correcting v1 in place",
        "cancelled",
        "cancelled: v2 was dropped",
        "failed: store error: disk full",
        "interrupted",
        "dry run: diff recorded, nothing changed",
    ] {
        let o = Outcome::parse(text);
        assert_eq!(o.to_string(), text);
        // The stored bytes are those of the text (stores written before the type read back).
        assert_eq!(encode(&o), encode(&text.to_string()));
        assert_eq!(
            decode::<Outcome>("replays", &encode(&text.to_string())).unwrap(),
            o
        );
    }
    assert!(matches!(
        Outcome::parse("something else"),
        Outcome::Failed(_)
    ));
}

#[test]
fn a_partition_read_from_past_unread_records_has_no_usable_checkpoints() {
    let (_d, store) = store();
    store
        .create_version(&version("v1", VersionState::Ready), &[])
        .unwrap();
    store
        .commit(&Commit {
            version: "v1",
            finals: &[],
            review_finals: &[],
            positions: &[],
            finalized_through: i64::MIN,
            checkpoints: &[(0, 10_000, 5), (1, 10_000, 7)],
            dead_letters: &[],
            late: &[],
            merger_state: None,
            epochs: &[],
            declared: &[],
            declared_through: None,
            declared_merger_state: None,
        })
        .unwrap();
    store.mark_unindexed(1, 500).unwrap();
    assert_eq!(store.checkpoints(0).unwrap(), vec![(10_000, 5)]);
    assert!(
        store.checkpoints(1).unwrap().is_empty(),
        "partition 1 is not indexed"
    );
}

/// A 1-minute window at `start_ms` with `views` view events and nothing else.
fn window(start_ms: i64, views: u64) -> FinalWindow {
    FinalWindow {
        size_ms: 60_000,
        start_ms,
        sales_by_category: Vec::new(),
        top_by_units: Vec::new(),
        top_by_revenue: Vec::new(),
        events_by_type: [0, views, 0, 0],
        top_searches: Vec::new(),
        sums: None,
    }
}

/// Commits `finals` to `version`, final through 10 minutes.
fn commit_windows(store: &Store, version: &str, finals: &[FinalWindow]) {
    commit_through(store, version, finals, 600_000);
}

/// Commits `finals` to `version`, final through `through`, with nothing else.
pub(super) fn commit_through(store: &Store, version: &str, finals: &[FinalWindow], through: i64) {
    store
        .commit(&Commit {
            version,
            finals,
            finalized_through: through,
            ..Commit::default()
        })
        .unwrap();
}

/// v1 with three windows, and replay `id`'s scratch version holding `scratch`.
fn audited(store: &Store, id: u64, scratch: &[FinalWindow]) {
    let name = format!("{SCRATCH_PREFIX}{id}");
    let state = VersionState::Correcting {
        replay: id,
        target: "v1".into(),
    };
    store.create_version(&version(&name, state), &[]).unwrap();
    commit_windows(store, &name, scratch);
}

fn end_audit(store: &Store, id: u64, repair: bool) -> (ReplayRecord, compare::Comparison) {
    let scratch = format!("{SCRATCH_PREFIX}{id}");
    let mut r = record(id, "v1", true);
    let end = if repair {
        r.outcome = Outcome::Completed;
        ReplayEnd::Swap {
            scratch: &scratch,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            audit: true,
            declared: None,
        }
    } else {
        r.outcome = Outcome::DryRun;
        ReplayEnd::DryRun {
            scratch: &scratch,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            audit: true,
            declared: None,
        }
    };
    store.end_replay(&mut r, end).unwrap();
    let diff = serde_json::from_slice(&store.replay_diff(id).unwrap().unwrap()).unwrap();
    (r, diff)
}

#[test]
fn an_audit_trusts_no_stored_hash_records_every_differing_window_and_repairs_only_what_differs() {
    let (_dir, store) = store();
    store
        .ensure_version(&version("v1", VersionState::Ready))
        .unwrap();
    let live = [window(0, 5), window(60_000, 6), window(120_000, 7)];
    commit_windows(&store, "v1", &live);

    // Equal: nothing differs, and a repair copies nothing.
    audited(&store, 1, &live);
    let (r, diff) = end_audit(&store, 1, true);
    assert_eq!(diff.summary.windows_compared, 3);
    assert_eq!(diff.summary.windows_differing, 0);
    assert_eq!(r.windows, 0, "nothing to repair, nothing copied");
    assert_eq!(store.replay_diff_windows(1, 0, 10).unwrap().1, 0);

    // A row of the 01:00 window goes behind the store's back; its stored hash stays.
    {
        let tx = store.db().unwrap().begin_write().unwrap();
        {
            let mut t = tx.open_table(RESULTS).unwrap();
            let a = Aggregate::EventsByType as u8;
            t.retain_in(
                ("v1", a, 60_000, 60_000, "")..("v1", a, 60_000, 60_001, ""),
                |_, _| false,
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    // Stored hashes alone see nothing; the audit recomputes them from the rows.
    let stored = compare::compare(&store, "v1", "v1", compare::Scope::default()).unwrap();
    assert_eq!(stored.summary.windows_differing, 0);
    audited(&store, 2, &live);
    let (_, diff) = end_audit(&store, 2, false);
    assert_eq!(diff.summary.windows_differing, 1, "{diff:?}");
    assert_eq!(diff.windows[0].window_start, "1970-01-01T00:01:00Z");
    let (page, total) = store.replay_diff_windows(2, 0, 10).unwrap();
    assert_eq!((page.len(), total), (1, 1));
    assert!(store.replay_diff_windows(2, 1, 10).unwrap().0.is_empty());

    // The repair puts the window back as recomputed.
    audited(&store, 3, &live);
    let (r, diff) = end_audit(&store, 3, true);
    assert_eq!(diff.summary.windows_differing, 1);
    assert!(r.windows > 0, "the differing range was copied");
    audited(&store, 4, &live);
    let (_, diff) = end_audit(&store, 4, false);
    assert_eq!(diff.summary.windows_differing, 0, "{diff:?}");
}

/// The `views` count of every 1-minute window `version` keeps: (start, views).
fn view_counts(store: &Store, version: &str) -> Vec<(i64, u64)> {
    store
        .windows(
            version,
            Aggregate::EventsByType,
            60_000,
            i64::MIN,
            i64::MAX,
            100,
        )
        .unwrap()
        .into_iter()
        .map(|w| {
            let views = w.rows.iter().find_map(|r| match r {
                Row::Count { event_type, row } if event_type == "view" => Some(row.count),
                _ => None,
            });
            (w.start_ms, views.unwrap_or(0))
        })
        .collect()
}

/// Everything one commit of `version` carries: two windows, a position, an index
/// checkpoint, a dead letter and a late-event record.
fn full_commit<'a>(
    version: &'a str,
    finals: &'a [FinalWindow],
    positions: &'a [PartitionPosition],
    dead: &'a [DeadLetter],
    late: &'a [LateRecord],
) -> Commit<'a> {
    Commit {
        version,
        finals,
        review_finals: &[],
        positions,
        finalized_through: 120_000,
        checkpoints: &[(0, 50, 30_000)],
        dead_letters: dead,
        late,
        merger_state: None,
        epochs: &[],
        declared: &[],
        declared_through: None,
        declared_merger_state: None,
    }
}

fn position() -> PartitionPosition {
    PartitionPosition {
        partition: 0,
        next_offset: 100,
        resume_offset: 90,
        resume_max_ts: 50_000,
        max_ts: 119_000,
    }
}

fn dead_letter() -> DeadLetter {
    DeadLetter {
        partition: 0,
        offset: 7,
        record_ts: 1_000,
        kind: "malformed".into(),
        reason: "not JSON".into(),
        size: 3,
        raw: b"{{{".to_vec(),
    }
}

fn late_record(version: &str) -> LateRecord {
    LateRecord {
        partition: 0,
        offset: 42,
        event_ts: 10_000,
        window_start: 0,
        window_size: 60_000,
        reason: format!("late for {version}"),
    }
}

#[test]
fn a_commit_keeps_windows_positions_and_records_together_and_repeating_it_changes_nothing() {
    let (_dir, store) = store();
    store
        .ensure_version(&version("v1", VersionState::Ready))
        .unwrap();
    let finals = [window(0, 3), window(60_000, 5)];
    let (positions, dead, late) = ([position()], [dead_letter()], [late_record("v1")]);
    let c = full_commit("v1", &finals, &positions, &dead, &late);
    store.commit(&c).unwrap();
    let expect = || {
        assert_eq!(
            store.load_state("v1").unwrap(),
            Some((120_000, positions.to_vec()))
        );
        assert_eq!(view_counts(&store, "v1"), [(0, 3), (60_000, 5)]);
        assert_eq!(store.dead_letters(None, 10).unwrap(), dead);
        assert_eq!(store.late_events("v1", 10).unwrap(), late);
        assert_eq!(store.checkpoints(0).unwrap(), [(50, 30_000)]);
        assert_eq!(store.counts("v1").unwrap(), (1, 1));
    };
    expect();
    // A process that died after committing reads the same records again and commits
    // them again: rows are keyed, so nothing is counted twice.
    store.commit(&c).unwrap();
    expect();
    // A later commit of a window overwrites it (an in-place correction's copy).
    store
        .commit(&full_commit(
            "v1",
            &[window(0, 4)],
            &positions,
            &dead,
            &late,
        ))
        .unwrap();
    assert_eq!(view_counts(&store, "v1"), [(0, 4), (60_000, 5)]);
    // Several versions' commits in one transaction.
    store
        .ensure_version(&version("v2", VersionState::Ready))
        .unwrap();
    let late2 = [late_record("v2")];
    store
        .commit_all(&[
            full_commit("v1", &[window(120_000, 1)], &positions, &[], &[]),
            full_commit("v2", &finals, &positions, &[], &late2),
        ])
        .unwrap();
    assert_eq!(
        view_counts(&store, "v1"),
        [(0, 4), (60_000, 5), (120_000, 1)]
    );
    assert_eq!(view_counts(&store, "v2"), [(0, 3), (60_000, 5)]);
    assert_eq!(store.late_events("v2", 10).unwrap(), late2);
}

#[test]
fn dropping_a_version_removes_its_windows_positions_and_late_records_and_nothing_else() {
    let (_dir, store) = store();
    for v in ["v1", "v2"] {
        store
            .ensure_version(&version(v, VersionState::Ready))
            .unwrap();
    }
    let finals = [window(0, 3), window(60_000, 5)];
    let (positions, dead) = ([position()], [dead_letter()]);
    let (late1, late2) = ([late_record("v1")], [late_record("v2")]);
    store
        .commit_all(&[
            full_commit("v1", &finals, &positions, &dead, &late1),
            full_commit("v2", &finals[..1], &positions, &dead, &late2),
        ])
        .unwrap();
    assert_eq!(store.serving().unwrap(), "v1");
    let e = store.drop_version("v1").unwrap_err().to_string();
    assert!(e.contains("serving"), "{e}");
    store.drop_version("v2").unwrap();
    assert_eq!(names(&store), ["v1"]);
    assert_eq!(view_counts(&store, "v2"), []);
    assert_eq!(store.load_state("v2").unwrap(), None);
    assert_eq!(store.late_events("v2", 10).unwrap(), []);
    // The serving version, the dead letters (of the log, not of a version) and the
    // event-time index are untouched.
    assert_eq!(view_counts(&store, "v1"), [(0, 3), (60_000, 5)]);
    assert_eq!(
        store.load_state("v1").unwrap(),
        Some((120_000, positions.to_vec()))
    );
    assert_eq!(store.late_events("v1", 10).unwrap(), late1);
    assert_eq!(store.dead_letters(None, 10).unwrap(), dead);
    assert_eq!(store.checkpoints(0).unwrap(), [(50, 30_000)]);
    let e = store.drop_version("v2").unwrap_err().to_string();
    assert!(e.contains("v2"), "{e}");
}
