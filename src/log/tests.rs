//! Tests of the embedded log against real files in temporary directories.
#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::duration_suboptimal_units,
    clippy::items_after_statements
)]

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::segment::{encode_frame, list_segments, read_index, segment_path};
use super::*;

fn cfg(partitions: u32, segment_bytes: u64) -> LogConfig {
    LogConfig {
        partitions,
        segment_bytes,
        fsync_interval: Duration::from_secs(3600),
    }
}

type Rec = (u64, i64, Vec<u8>, Vec<u8>);

/// Everything readable on `partition` now.
fn drain(reader: &mut LogReader, partition: u32) -> Vec<Rec> {
    let mut batch = RecordBatch::new();
    let mut out = Vec::new();
    loop {
        batch.clear();
        let n = reader.read(partition, 37, &mut batch).unwrap();
        assert_eq!(n, batch.len());
        if n == 0 {
            return out;
        }
        for r in batch.iter() {
            assert_eq!(r.partition, partition);
            out.push((r.offset, r.timestamp_ms, r.key.to_vec(), r.value.to_vec()));
        }
    }
}

fn pdir(dir: &Path, p: u32) -> PathBuf {
    partition_dir(dir, p)
}

fn last_segment(dir: &Path, p: u32) -> PathBuf {
    let d = pdir(dir, p);
    let base = *list_segments(&d).unwrap().last().unwrap();
    segment_path(&d, base)
}

fn value_for(i: usize) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(v.len() + i % 61, b'x');
    v
}

#[test]
fn round_trip_across_partitions_and_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let mut expected: Vec<Vec<Rec>> = vec![Vec::new(); 3];
    let log_id;
    {
        let mut w = LogWriter::open(&dir, &cfg(3, 4096)).unwrap();
        assert_eq!(w.partitions(), 3);
        assert_eq!(w.log_id().len(), 16);
        log_id = w.log_id().to_string();
        for i in 0..3000usize {
            let key = format!("user-{}", i % 97).into_bytes();
            let value = value_for(i);
            let ts = 1_700_000_000_000 + i as i64;
            let (p, off) = w.append(&key, &value, ts).unwrap();
            assert_eq!(p, partition_for(&key, 3));
            assert_eq!(off, expected[p as usize].len() as u64);
            expected[p as usize].push((off, ts, key, value));
            if i % 100 == 99 {
                w.flush().unwrap();
            }
        }
        assert_eq!(
            w.end_offsets(),
            expected.iter().map(|e| e.len() as u64).collect::<Vec<_>>()
        );
    }
    let mut r = LogReader::open(&dir).unwrap();
    assert_eq!(r.partitions(), 3);
    assert_eq!(r.log_id(), log_id);
    for p in 0..3u32 {
        let segs = list_segments(&pdir(&dir, p)).unwrap();
        assert!(segs.len() > 3, "partition {p} has {} segments", segs.len());
        for &b in &segs {
            let len = fs::metadata(segment_path(&pdir(&dir, p), b)).unwrap().len();
            assert!(len <= 4096, "segment {b} has {len} bytes");
        }
        let got = drain(&mut r, p);
        assert_eq!(got, expected[p as usize], "partition {p}");
        assert!(got.iter().enumerate().all(|(i, rec)| rec.0 == i as u64));
        assert_eq!(r.position(p), got.len() as u64);
        assert_eq!(r.end_offset(p).unwrap(), got.len() as u64);
    }
    // Reopening the writer keeps the offsets going.
    let mut w = LogWriter::open(&dir, &cfg(3, 4096)).unwrap();
    assert_eq!(w.log_id(), log_id);
    let off = w.append_to(1, b"k", b"v", 5).unwrap();
    assert_eq!(off, expected[1].len() as u64);
}

#[test]
fn handles_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<LogWriter>();
    assert_send::<LogReader>();
    assert_send::<RecordBatch>();
}

#[test]
fn record_batch_push_and_get() {
    let mut b = RecordBatch::new();
    assert!(b.is_empty());
    b.push(2, 10, -1, b"ab", b"cde");
    b.push(0, 11, 7, b"", b"");
    b.push(1, 12, 8, b"k", b"");
    assert_eq!(b.len(), 3);
    assert_eq!(b.byte_len(), 6);
    let r = b.get(0);
    assert_eq!(
        (r.partition, r.offset, r.timestamp_ms, r.key, r.value),
        (2, 10, -1, &b"ab"[..], &b"cde"[..])
    );
    assert_eq!(b.get(1).key, b"");
    assert_eq!(b.get(2).key, b"k");
    assert_eq!(b.get(2).value, b"");
    assert_eq!(
        b.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    b.clear();
    assert!(b.is_empty());
    assert_eq!(b.byte_len(), 0);
}

#[test]
fn second_writer_is_locked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = LogWriter::open(dir, &cfg(2, 1 << 20)).unwrap();
    let err = LogWriter::open(dir, &cfg(2, 1 << 20)).unwrap_err();
    assert!(matches!(err, LogError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("writer.lock is held"), "{msg}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    drop(w);
    let w2 = LogWriter::open(dir, &cfg(2, 1 << 20)).unwrap();
    drop(w2);
}

#[test]
fn open_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nothing-here");
    let err = LogReader::open(&dir).unwrap_err();
    assert!(matches!(err, LogError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("produce events first"));

    drop(LogWriter::open(&dir, &cfg(2, 1 << 20)).unwrap());
    let err = LogWriter::open(&dir, &cfg(3, 1 << 20)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::PartitionMismatch {
                existing: 2,
                requested: 3,
                ..
            }
        ),
        "{err:?}"
    );
    let err = LogReader::open_or_create(&dir, 5).unwrap_err();
    assert!(matches!(
        err,
        LogError::PartitionMismatch {
            existing: 2,
            requested: 5,
            ..
        }
    ));

    let mut w = LogWriter::open(&dir, &cfg(2, 1 << 20)).unwrap();
    let big = vec![0u8; MAX_RECORD_BYTES];
    let err = w.append(b"k", &big, 0).unwrap_err();
    assert!(
        matches!(err, LogError::RecordTooLarge { size, max } if size == MAX_RECORD_BYTES + 1 && max == MAX_RECORD_BYTES)
    );
    assert_eq!(w.append_to(0, b"", &big, 0).unwrap(), 0);
    drop(w);
    let mut r = LogReader::open(&dir).unwrap();
    let mut batch = RecordBatch::new();
    assert_eq!(r.read(0, 10, &mut batch).unwrap(), 1);
    assert_eq!(batch.get(0).value.len(), MAX_RECORD_BYTES);

    fs::write(
        dir.join("meta.json"),
        b"{\"format\":2,\"partitions\":2,\"id\":\"x\"}",
    )
    .unwrap();
    assert!(matches!(
        LogReader::open(&dir).unwrap_err(),
        LogError::BadMeta { .. }
    ));
    fs::write(dir.join("meta.json"), b"not json").unwrap();
    assert!(matches!(
        LogReader::open(&dir).unwrap_err(),
        LogError::BadMeta { .. }
    ));
}

#[test]
fn open_or_create_races_agree_on_one_log() {
    for _ in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let ids: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        LogReader::open_or_create(&dir, 3)
                            .unwrap()
                            .log_id()
                            .to_string()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
        let meta = fs::read_to_string(dir.join("meta.json")).unwrap();
        assert!(meta.contains(&format!("\"id\":\"{}\"", ids[0])), "{meta}");
        assert!(
            meta.contains("\"format\":1") && meta.contains("\"partitions\":3"),
            "{meta}"
        );
        // No temporary files are left behind; partition directories exist.
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(names, vec!["meta.json", "p-0000", "p-0001", "p-0002"]);
        let w = LogWriter::open(&dir, &cfg(3, 1 << 20)).unwrap();
        assert_eq!(w.log_id(), ids[0]);
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    CutMidRecord,
    ShortGarbage,
    BadCrcFrame,
}

fn torn_tail_case(damage: Damage) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 100usize;
    let mut expected = Vec::new();
    {
        let mut w = LogWriter::open(dir, &cfg(1, 2048)).unwrap();
        for i in 0..n {
            let key = format!("k{i}").into_bytes();
            let ts = i as i64 * 3;
            w.append_to(0, &key, &value_for(i), ts).unwrap();
            expected.push((i as u64, ts, key, value_for(i)));
        }
        w.sync().unwrap();
    }
    let seg = last_segment(dir, 0);
    let good_len = fs::metadata(&seg).unwrap().len();
    match damage {
        Damage::CutMidRecord => {
            OpenOptions::new()
                .write(true)
                .open(&seg)
                .unwrap()
                .set_len(good_len - 7)
                .unwrap();
            expected.pop();
        }
        Damage::ShortGarbage => {
            OpenOptions::new()
                .append(true)
                .open(&seg)
                .unwrap()
                .write_all(b"\x13\x37garb")
                .unwrap();
        }
        Damage::BadCrcFrame => {
            let mut frame = Vec::new();
            encode_frame(&mut frame, n as u64, 0, b"key", b"torn value");
            let last = frame.len() - 1;
            frame[last] ^= 0xff;
            OpenOptions::new()
                .append(true)
                .open(&seg)
                .unwrap()
                .write_all(&frame)
                .unwrap();
        }
    }
    let good = expected.len() as u64;

    let mut r = LogReader::open(dir).unwrap();
    assert_eq!(drain(&mut r, 0), expected, "{damage:?}");
    assert_eq!(drain(&mut r, 0), Vec::<Rec>::new());
    assert_eq!(r.end_offset(0).unwrap(), good);

    let mut w = LogWriter::open(dir, &cfg(1, 2048)).unwrap();
    assert_eq!(w.end_offsets(), vec![good], "{damage:?}");
    let len = fs::metadata(&seg).unwrap().len();
    match damage {
        Damage::CutMidRecord => assert!(len < good_len - 7, "torn frame not truncated: {len}"),
        _ => assert_eq!(len, good_len),
    }
    assert_eq!(w.append_to(0, b"new", b"after repair", 999).unwrap(), good);
    w.flush().unwrap();

    // The reader that saw the torn tail continues with the new record.
    let more = drain(&mut r, 0);
    assert_eq!(
        more,
        vec![(good, 999, b"new".to_vec(), b"after repair".to_vec())],
        "{damage:?}"
    );
    assert_eq!(r.end_offset(0).unwrap(), good + 1);
    // And a fresh reader sees everything.
    expected.push(more[0].clone());
    let mut r2 = LogReader::open(dir).unwrap();
    assert_eq!(drain(&mut r2, 0), expected);
}

#[test]
fn torn_tail_cut_mid_record() {
    torn_tail_case(Damage::CutMidRecord);
}

#[test]
fn torn_tail_short_garbage() {
    torn_tail_case(Damage::ShortGarbage);
}

#[test]
fn torn_tail_bad_crc_frame() {
    torn_tail_case(Damage::BadCrcFrame);
}

#[test]
fn torn_index_tail_is_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let mut w = LogWriter::open(dir, &cfg(1, 1 << 20)).unwrap();
        for i in 0..5000usize {
            w.append_to(0, b"k", &value_for(i), i as i64).unwrap();
        }
    }
    let d = pdir(dir, 0);
    let idx = d.join(format!("{:020}.idx", 0));
    assert!(read_index(&d, 0).unwrap().len() > 3);
    // Garbage entry pointing into the middle of a frame, then a torn entry.
    let mut f = OpenOptions::new().append(true).open(&idx).unwrap();
    let mut bogus = Vec::new();
    segment::IndexEntry {
        offset: 4000,
        position: 300_001,
        max_ts: 0,
    }
    .encode(&mut bogus);
    f.write_all(&bogus).unwrap();
    f.write_all(&[7; 11]).unwrap();
    drop(f);
    let mut r = LogReader::open(dir).unwrap();
    for target in [3999u64, 4000, 4001, 4999] {
        r.seek(0, target).unwrap();
        let got = drain(&mut r, 0);
        assert_eq!(got.first().map(|x| x.0), Some(target));
        assert_eq!(got.len() as u64, 5000 - target);
    }
    assert_eq!(r.offset_for_timestamp(0, 4500).unwrap(), 4500);
    assert_eq!(r.end_offset(0).unwrap(), 5000);
    let mut w = LogWriter::open(dir, &cfg(1, 1 << 20)).unwrap();
    assert_eq!(w.end_offsets(), vec![5000]);
    assert_eq!(w.append_to(0, b"k", b"v", 1).unwrap(), 5000);
    drop(w);
    // The writer cut the bad index tail.
    assert_eq!(fs::metadata(&idx).unwrap().len() % 24, 0);
    assert!(
        read_index(&d, 0)
            .unwrap()
            .iter()
            .all(|e| e.offset != 4000 || e.position != 300_001)
    );
}

#[test]
fn bad_frame_before_a_later_segment_is_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let mut w = LogWriter::open(dir, &cfg(1, 1024)).unwrap();
        for i in 0..200usize {
            w.append_to(0, b"k", &value_for(i), 0).unwrap();
        }
    }
    let d = pdir(dir, 0);
    let segs = list_segments(&d).unwrap();
    assert!(segs.len() > 3);
    let victim = segment_path(&d, segs[1]);
    let mut bytes = fs::read(&victim).unwrap();
    let len = bytes.len();
    bytes[len - 3] ^= 1; // last frame of the second segment
    fs::write(&victim, &bytes).unwrap();

    let mut r = LogReader::open(dir).unwrap();
    let mut batch = RecordBatch::new();
    let mut total = 0;
    let err = loop {
        match r.read(0, 1000, &mut batch) {
            Ok(0) => panic!("corruption not detected"),
            Ok(n) => total += n,
            Err(e) => break e,
        }
    };
    assert_eq!(
        total as u64,
        segs[2] - 1,
        "records before the bad frame are returned"
    );
    match &err {
        LogError::Corrupt { path, .. } => assert_eq!(path, &victim),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("corrupt"));
    // Again on the next call.
    assert!(matches!(
        r.read(0, 10, &mut batch),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn reader_tails_a_concurrent_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    const N: usize = 20_000;
    let key_of = |i: usize| format!("key-{}", i % 13).into_bytes();
    let mut expected: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 2];
    for i in 0..N {
        expected[partition_for(&key_of(i), 2) as usize].push((key_of(i), value_for(i)));
    }
    // The reader may start before the writer.
    let mut r = LogReader::open_or_create(&dir, 2).unwrap();
    let writer = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let mut w = LogWriter::open(&dir, &cfg(2, 16 << 10)).unwrap();
            for i in 0..N {
                w.append(&key_of(i), &value_for(i), i as i64).unwrap();
                if i % 97 == 0 {
                    w.flush().unwrap();
                }
                if i % 2000 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            w.flush().unwrap();
        })
    };
    let mut got: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 2];
    let mut batch = RecordBatch::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut empty_polls = 0u64;
    while got[0].len() + got[1].len() < N {
        assert!(
            Instant::now() < deadline,
            "timed out with {} records",
            got[0].len() + got[1].len()
        );
        let mut any = false;
        for p in 0..2u32 {
            batch.clear();
            let n = r.read(p, 256, &mut batch).unwrap();
            any |= n > 0;
            for rec in batch.iter() {
                let g = &mut got[p as usize];
                assert_eq!(
                    rec.offset,
                    g.len() as u64,
                    "partition {p}: out of order or duplicate"
                );
                g.push((rec.key.to_vec(), rec.value.to_vec()));
            }
            let end = r.end_offset(p).unwrap();
            assert!(end >= r.position(p));
        }
        if !any {
            empty_polls += 1;
            std::thread::yield_now();
        }
    }
    writer.join().unwrap();
    assert_eq!(got, expected);
    batch.clear();
    assert_eq!(
        r.read(0, 10, &mut batch).unwrap() + r.read(1, 10, &mut batch).unwrap(),
        0
    );
    for p in 0..2 {
        assert!(list_segments(&pdir(&dir, p)).unwrap().len() > 5);
    }
    let _ = empty_polls;
}

#[test]
fn seek_to_arbitrary_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 10_000u64;
    let mut w = LogWriter::open(dir, &cfg(1, 256 << 10)).unwrap();
    for i in 0..n {
        w.append_to(0, format!("{i:08}").as_bytes(), &[b'v'; 100], i as i64)
            .unwrap();
    }
    w.flush().unwrap();
    let d = pdir(dir, 0);
    let segs = list_segments(&d).unwrap();
    assert!(segs.len() >= 4, "{segs:?}");
    let entries = read_index(&d, segs[1]).unwrap();
    assert!(entries.len() >= 3, "{entries:?}");
    assert_eq!(entries[0].offset, segs[1]);
    let at_entry = entries[2].offset;

    let mut r = LogReader::open(dir).unwrap();
    let mut batch = RecordBatch::new();
    let targets = [
        0,
        1,
        4999,
        segs[1] - 1,
        segs[1],
        segs[2] + 1,
        at_entry,
        at_entry - 1,
        at_entry + 1,
        n - 1,
        3,
        0,
    ];
    for &target in &targets {
        r.seek(0, target).unwrap();
        assert_eq!(r.position(0), target);
        batch.clear();
        let got = r.read(0, 50, &mut batch).unwrap();
        assert_eq!(got as u64, 50.min(n - target), "target {target}");
        for (j, rec) in batch.iter().enumerate() {
            let want = target + j as u64;
            assert_eq!(rec.offset, want);
            assert_eq!(rec.key, format!("{want:08}").as_bytes());
            assert_eq!(rec.timestamp_ms, want as i64);
        }
        assert_eq!(r.position(0), target + got as u64);
    }
    // At the end, and past the end: records are returned once they exist.
    r.seek(0, n).unwrap();
    batch.clear();
    assert_eq!(r.read(0, 10, &mut batch).unwrap(), 0);
    r.seek(0, n + 5).unwrap();
    assert_eq!(r.read(0, 10, &mut batch).unwrap(), 0);
    for i in n..n + 10 {
        w.append_to(0, format!("{i:08}").as_bytes(), b"late", i as i64)
            .unwrap();
    }
    w.flush().unwrap();
    batch.clear();
    assert_eq!(r.read(0, 100, &mut batch).unwrap(), 5);
    assert_eq!(
        batch.iter().map(|x| x.offset).collect::<Vec<_>>(),
        (n + 5..n + 10).collect::<Vec<_>>()
    );
    assert_eq!(batch.get(0).value, b"late");
    assert_eq!(r.position(0), n + 10);
}

#[test]
fn end_offset_and_offset_for_timestamp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut w = LogWriter::open(dir, &cfg(2, 32 << 10)).unwrap();
    let mut r = LogReader::open(dir).unwrap();
    assert_eq!(r.end_offset(0).unwrap(), 0);
    assert_eq!(r.offset_for_timestamp(0, 0).unwrap(), 0);

    // Mostly increasing timestamps with jitter (not monotone).
    let ts_of = |i: usize| 1_000 + i as i64 * 10 + ((i * 7919) % 13) as i64 * 5 - 30;
    let mut ts = Vec::new();
    let mut append = |w: &mut LogWriter, range: std::ops::Range<usize>| {
        for i in range {
            ts.push(ts_of(i));
            w.append_to(0, b"key", &value_for(i), ts_of(i)).unwrap();
        }
    };
    // (Fewer records than a segment: a roll would write them out early.)
    append(&mut w, 0..50);
    assert_eq!(r.end_offset(0).unwrap(), 0, "nothing flushed yet");
    w.flush().unwrap();
    assert_eq!(r.end_offset(0).unwrap(), 50);
    append(&mut w, 50..5000);
    w.flush().unwrap();
    assert_eq!(r.end_offset(0).unwrap(), 5000);
    assert_eq!(r.end_offset(1).unwrap(), 0);
    append(&mut w, 5000..5100);
    assert!(r.end_offset(0).unwrap() < 5100);
    w.flush().unwrap();
    assert_eq!(r.end_offset(0).unwrap(), 5100);
    assert!(list_segments(&pdir(dir, 0)).unwrap().len() > 5);

    let brute = |t: i64| {
        ts.iter()
            .position(|&x| x >= t)
            .map_or(ts.len() as u64, |i| i as u64)
    };
    let mut probes = vec![i64::MIN, 0, 969, 970, 971, ts_of(5099) + 1, i64::MAX];
    for i in (0..5100).step_by(37) {
        probes.extend([ts[i] - 1, ts[i], ts[i] + 1]);
    }
    for t in probes {
        assert_eq!(r.offset_for_timestamp(0, t).unwrap(), brute(t), "ts {t}");
    }
    assert_eq!(r.offset_for_timestamp(1, 5).unwrap(), 0);
    // The read position is not disturbed.
    assert_eq!(r.position(0), 0);
    assert_eq!(drain(&mut r, 0).len(), 5100);
}

#[derive(Clone, Debug)]
enum Op {
    Append { key: u8, value_len: usize },
    Flush,
    Sync,
    Reopen,
    Poll,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (any::<u8>(), 0usize..400).prop_map(|(key, value_len)| Op::Append { key, value_len }),
        3 => Just(Op::Flush),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => Just(Op::Poll),
    ]
}

fn check_poll(r: &mut LogReader, model: &[Vec<Rec>], seen: &mut [usize]) {
    for (p, recs) in model.iter().enumerate() {
        let p32 = u32::try_from(p).unwrap();
        for rec in drain(r, p32) {
            assert_eq!(rec, recs[seen[p]], "partition {p}");
            seen[p] += 1;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn random_appends_flushes_rolls_reopens(
        partitions in 1u32..4,
        segment_bytes in 64u64..3000,
        ops in prop::collection::vec(op_strategy(), 1..120),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let config = cfg(partitions, segment_bytes);
        let mut w = LogWriter::open(dir, &config).unwrap();
        let mut tail = LogReader::open(dir).unwrap();
        let mut model: Vec<Vec<Rec>> = vec![Vec::new(); partitions as usize];
        let mut seen = vec![0usize; partitions as usize];
        let mut ts = 0i64;
        let mut values: HashMap<usize, Vec<u8>> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Append { key, value_len } => {
                    ts += i64::from(*key % 5) - 1;
                    let value = values.entry(i).or_insert_with(|| (0..*value_len).map(|j| (i + j) as u8).collect()).clone();
                    let key = vec![*key; usize::from(*key % 4)];
                    let (p, off) = w.append(&key, &value, ts).unwrap();
                    prop_assert_eq!(off, model[p as usize].len() as u64);
                    model[p as usize].push((off, ts, key, value));
                }
                Op::Flush => w.flush().unwrap(),
                Op::Sync => w.sync().unwrap(),
                Op::Reopen => {
                    drop(w);
                    w = LogWriter::open(dir, &config).unwrap();
                    prop_assert_eq!(w.end_offsets(), model.iter().map(|m| m.len() as u64).collect::<Vec<_>>());
                }
                Op::Poll => check_poll(&mut tail, &model, &mut seen),
            }
        }
        drop(w);
        check_poll(&mut tail, &model, &mut seen);
        for (p, m) in model.iter().enumerate() {
            prop_assert_eq!(seen[p], m.len());
        }
        let mut fresh = LogReader::open(dir).unwrap();
        for (p, m) in model.iter().enumerate() {
            let p32 = u32::try_from(p).unwrap();
            prop_assert_eq!(&drain(&mut fresh, p32), m);
            prop_assert_eq!(fresh.end_offset(p32).unwrap(), m.len() as u64);
        }
    }
}

#[test]
fn writer_recovers_without_last_index_and_with_empty_last_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ts_of = |i: u64| (i as i64 * 7) % 1000 + (i as i64 / 100) * 1000;
    {
        let mut w = LogWriter::open(dir, &cfg(1, 8 << 10)).unwrap();
        for i in 0..1000u64 {
            w.append_to(0, b"k", &value_for(i as usize), ts_of(i))
                .unwrap();
        }
    }
    let d = pdir(dir, 0);
    let segs = list_segments(&d).unwrap();
    assert!(segs.len() > 3);
    // Lose the last segment's index entirely.
    fs::remove_file(d.join(format!("{:020}.idx", segs.last().unwrap()))).unwrap();
    {
        let mut w = LogWriter::open(dir, &cfg(1, 8 << 10)).unwrap();
        assert_eq!(w.end_offsets(), vec![1000]);
        w.append_to(0, b"k", b"v", ts_of(1000)).unwrap();
    }
    // An interrupted roll: an empty next segment.
    fs::File::create(segment_path(&d, 1001)).unwrap();
    {
        let mut w = LogWriter::open(dir, &cfg(1, 8 << 10)).unwrap();
        assert_eq!(w.end_offsets(), vec![1001]);
        assert_eq!(w.append_to(0, b"k", b"v", ts_of(1001)).unwrap(), 1001);
    }
    assert_eq!(list_segments(&d).unwrap().last(), Some(&1001));
    let mut r = LogReader::open(dir).unwrap();
    let all = drain(&mut r, 0);
    assert_eq!(all.len(), 1002);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, x)| x.0 == i as u64 && x.1 == ts_of(i as u64))
    );
    for t in [0, 500, 999, 1000, 4321, 9000, 10_006, 10_007, 20_000] {
        let want = all.iter().position(|x| x.1 >= t).unwrap_or(all.len()) as u64;
        assert_eq!(r.offset_for_timestamp(0, t).unwrap(), want, "ts {t}");
    }
}

/// Throughput check: `cargo test --release -- --ignored --nocapture read_throughput`.
#[test]
#[ignore = "benchmark"]
fn read_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 3_000_000u64;
    let value = [b'v'; 100];
    let t = Instant::now();
    {
        let mut w = LogWriter::open(dir, &cfg(1, 64 << 20)).unwrap();
        for i in 0..n {
            w.append_to(0, &i.to_le_bytes(), &value, 0).unwrap();
            if i % 10_000 == 0 {
                w.flush().unwrap();
            }
        }
    }
    let write = t.elapsed();
    let t = Instant::now();
    let mut r = LogReader::open(dir).unwrap();
    let mut batch = RecordBatch::new();
    let mut total = 0u64;
    loop {
        batch.clear();
        let k = r.read(0, 4096, &mut batch).unwrap();
        if k == 0 {
            break;
        }
        total += k as u64;
    }
    let read = t.elapsed();
    assert_eq!(total, n);
    eprintln!(
        "write {:.2} M rec/s, read {:.2} M rec/s",
        n as f64 / write.as_secs_f64() / 1e6,
        n as f64 / read.as_secs_f64() / 1e6
    );
}
