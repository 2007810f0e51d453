//! JSON points, `llm_prediction` records and InfluxDB line protocol, line by line (replay's path).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telltale_codec::decode::{Decoded, Decoder};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut d = Decoder::new(Default::default());
    let mut out = Decoded::default();
    for (i, line) in text.lines().enumerate() {
        d.line(line, i as u64, &mut out);
    }
});
