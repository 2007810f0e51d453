//! An Arrow IPC stream (what `telltale replay -` reads from standard input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use telltale_codec::columnar::ColumnarReader;
use telltale_codec::decode::{Decoded, Decoder};

fuzz_target!(init: quiet_caught_panics(), |data: &[u8]| {
    let Ok(reader) = ColumnarReader::ipc_stream(std::io::Cursor::new(data.to_vec()), "fuzz") else {
        return;
    };
    let mut d = Decoder::new(Default::default());
    let mut out = Decoded::default();
    for chunk in reader.take(64) {
        let Ok(chunk) = chunk else { return };
        d.columns(&chunk, 0, &mut out);
        out.records.clear();
    }
});

/// The readers' panics that `ColumnarReader` catches (and reports as errors) are not crashes;
/// any other panic still aborts the run through libfuzzer-sys's own guard.
fn quiet_caught_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}
