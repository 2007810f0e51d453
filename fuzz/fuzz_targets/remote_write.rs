//! A Prometheus remote-write body (snappy-compressed protobuf).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telltale_codec::decode::Decoded;

fuzz_target!(|data: &[u8]| {
    let mut out = Decoded::default();
    let _ = telltale_codec::remote_write::decode(data, 0, &mut out);
});
