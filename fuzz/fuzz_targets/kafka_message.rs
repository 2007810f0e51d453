//! A Kafka message as the live engine reads it: text lines of any kind, or an OTLP request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telltale_codec::decode::{Decoded, Decoder};

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(Default::default());
    let mut out = Decoded::default();
    let _ = d.message(data, 0, &mut out);
    let _ = out.first_reject();
});
