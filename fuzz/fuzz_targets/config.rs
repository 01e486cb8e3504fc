//! The configuration parser on arbitrary text: a configuration or a one-line error that
//! names what is wrong; never a panic. A valid one round-trips through TOML.
#![no_main]

use kappa::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text) {
        Ok(cfg) => {
            let again = toml::to_string(&cfg).expect("a valid configuration serialises");
            let back = Config::from_toml_str(&again).expect("and parses back");
            assert_eq!(back.results_fingerprint(), cfg.results_fingerprint());
            let fp = Config::default().with_fingerprint(&cfg.results_fingerprint());
            assert_eq!(fp.expect("fingerprint parses").results_fingerprint(), cfg.results_fingerprint());
        }
        Err(e) => assert!(!e.0.contains('\n'), "one line: {}", e.0),
    }
});
