//! The event decoder on arbitrary bytes, with every schema and with schema 1 only: never
//! a panic; a decoded event satisfies the schema's rules; and kappa's own JSON scanner
//! agrees with the serde_json decoder it replaced (same events, same accept/reject).
#![no_main]

use kappa::event::{EventType, Rules, Schemas, decode, decode_serde, decode_with};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v1_only = Rules {
        schemas: Schemas::of(&[1]),
        ..Rules::new(65_536)
    };
    for result in [decode(data, 65_536), decode_with(data, &v1_only)] {
        if let Ok(e) = result {
            assert!(!e.event_id.is_empty());
            assert!(u64::from(e.quantity) <= 1_000_000);
            if e.event_type != EventType::Search {
                assert!(!e.product_id.is_empty() && !e.category.is_empty());
            }
        }
    }
    match (decode(data, 65_536), decode_serde(data, &Rules::new(65_536))) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("scanner {a:?} / serde {b:?}"),
    }
    // The size limit is checked before parsing.
    if data.len() > 256 {
        assert!(decode(data, 256).is_err());
    }
});
