//! CSV: a header line, then rows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telltale_codec::csv::CsvLayout;
use telltale_codec::decode::{CsvSeries, Decoded, Decoder};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.lines();
    let Some(layout) = lines.next().and_then(CsvLayout::from_header) else {
        return;
    };
    let csv = CsvSeries::new(layout, "fuzz".into());
    let mut d = Decoder::new(Default::default());
    let mut out = Decoded::default();
    for (i, line) in lines.enumerate() {
        d.csv_row(&csv, line, i as u64, &mut out);
    }
});
