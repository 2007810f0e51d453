//! The hand-written timestamp parser against chrono on generated text: RFC 3339 date-times are
//! read as chrono reads them (or refused where chrono refuses them), and the space-separated
//! form without a zone (NAB's CSV) and bare dates as chrono's naive UTC ones.

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use proptest::prelude::*;
use telltale_core::time::parse_rfc3339;

fn fraction() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "\\.[0-9]{1,9}"]
}

fn zone() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Z".to_owned()),
        (prop_oneof![Just('+'), Just('-')], 0u32..26, 0u32..62)
            .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn rfc3339_date_times_read_as_chrono_reads_them(
        y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61,
        s in prop_oneof![0u32..60, Just(61u32)], frac in fraction(), zone in zone(),
    ) {
        let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}");
        let want = DateTime::parse_from_rfc3339(&text).ok().map(|t| t.timestamp_millis());
        prop_assert_eq!(parse_rfc3339(&text), want, "{}", text);
    }

    #[test]
    fn zoneless_date_times_and_dates_read_as_utc(
        y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61,
        s in 0u32..60,
    ) {
        let text = format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}");
        let want = NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|t| t.and_utc().timestamp_millis());
        prop_assert_eq!(parse_rfc3339(&text), want, "{}", text);
        let date = &text[..10];
        let want = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .ok()
            .map(|t| t.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis());
        prop_assert_eq!(parse_rfc3339(date), want, "{}", date);
    }

    #[test]
    fn any_text_chrono_reads_is_read_the_same(text in "[0-9T:.Z+ -]{0,30}") {
        if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
            prop_assert_eq!(parse_rfc3339(&text), Some(t.timestamp_millis()), "{}", text);
        }
    }
}

#[test]
fn dates_that_do_not_exist_and_offsets_out_of_range_are_refused() {
    for bad in [
        "2024-02-31T00:00:00Z",
        "2023-02-29",
        "2024-04-31 00:00:00",
        "2024-01-01T00:00:00+24:00",
        "2024-01-01T00:00:00+01:60",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
}
