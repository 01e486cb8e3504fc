//! The event decoder on arbitrary bytes, with every schema and with schema 1 only: never
//! a panic; a decoded event satisfies the schema's rules.
#![no_main]

use kappa::event::{EventType, decode, decode_schemas};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for result in [decode(data, 65_536), decode_schemas(data, 65_536, &[1])] {
        if let Ok(e) = result {
            assert!(!e.event_id.is_empty());
            assert!(u64::from(e.quantity) <= 1_000_000);
            if e.event_type != EventType::Search {
                assert!(!e.product_id.is_empty() && !e.category.is_empty());
            }
        }
    }
    // The size limit is checked before parsing.
    if data.len() > 256 {
        assert!(decode(data, 256).is_err());
    }
});
