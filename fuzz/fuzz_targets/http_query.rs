//! The HTTP read API's query-parameter parsing on arbitrary query strings, against a
//! store with results: an answer or an error (400/404), never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use kappa::http::{AppState, read_api};
use libfuzzer_sys::fuzz_target;

fn state() -> &'static AppState {
    static S: OnceLock<(tempfile::TempDir, AppState)> = OnceLock::new();
    &S.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let store = kappa::store::Store::open(&t.path().join("kappa.redb")).unwrap();
        let st = AppState {
            store,
            metrics: Arc::new(kappa::metrics::Metrics::new()),
            shared: Arc::new(kappa::pipeline::Shared::default()),
            control: None,
            token: String::new(),
        };
        (t, st)
    })
    .1
}

const ENDPOINTS: [&str; 7] = [
    "windows",
    "top-products",
    "provisional",
    "latest",
    "dead-letters",
    "late-events",
    "nope",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(query) = std::str::from_utf8(rest) else {
        return;
    };
    let endpoint = ENDPOINTS[usize::from(first) % ENDPOINTS.len()];
    if let Ok(v) = read_api(state(), endpoint, query) {
        assert!(v.is_object());
    }
});
