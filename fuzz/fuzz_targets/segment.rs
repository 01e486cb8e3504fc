//! Arbitrary bytes as the segment file of an embedded log's partition: the reader returns
//! records or a clean error, never panics or loops, and every record it returns is one the
//! frame format (CRC, offsets in sequence) vouches for.
#![no_main]

use std::sync::OnceLock;

use kappa::log::{LogReader, RecordBatch};
use libfuzzer_sys::fuzz_target;

fn dir() -> &'static std::path::Path {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| {
        let t = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        LogReader::open_or_create(t.path(), 1).unwrap();
        t
    })
    .path()
}

fuzz_target!(|data: &[u8]| {
    let part = dir().join("p-0000");
    std::fs::create_dir_all(&part).unwrap();
    let _ = std::fs::remove_file(part.join("00000000000000000000.idx"));
    std::fs::write(part.join("00000000000000000000.log"), data).unwrap();
    let Ok(mut reader) = LogReader::open(dir()) else {
        return;
    };
    let mut batch = RecordBatch::new();
    let mut last = None;
    for _ in 0..10_000 {
        batch.clear();
        match reader.read(0, 1024, &mut batch) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                for r in batch.iter() {
                    if let Some(prev) = last {
                        assert!(r.offset > prev, "offsets increase");
                    }
                    last = Some(r.offset);
                }
            }
        }
    }
    let _ = reader.end_offset(0);
    let _ = reader.offset_for_timestamp(0, i64::from(data.first().copied().unwrap_or(0)));
});
