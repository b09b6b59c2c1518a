//! Arbitrary bytes as the body of POST /validate and /mutate.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pvc_guard::config::Config;
use pvc_guard::policy::Policy;

static POLICY: LazyLock<Policy> = LazyLock::new(|| Policy::new(Config::default()));

fuzz_target!(|body: &[u8]| {
    if let Err(e) = pvc_guard::laws::check_answer(&POLICY, body) {
        panic!("{e}");
    }
});
