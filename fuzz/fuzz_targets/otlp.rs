//! An OTLP `ExportMetricsServiceRequest` (protobuf), twice: the second pass exercises the
//! cumulative state (rates and per-interval differences).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telltale_codec::decode::Decoded;
use telltale_codec::otlp::{Cumulative, decode};

fuzz_target!(|data: &[u8]| {
    let mut out = Decoded::default();
    let mut state = Cumulative::default();
    let _ = decode(data, 0, &mut state, &mut out);
    let _ = decode(data, 1, &mut state, &mut out);
});
