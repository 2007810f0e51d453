//! The hand-written JSON point parser against serde_json on generated lines: the same lines
//! are accepted and rejected, and an accepted line gives the values serde_json reads.

use proptest::prelude::*;
use serde_json::Value;
use telltale_codec::json::{PointBuf, parse_json_line};
use telltale_core::time::parse_rfc3339;

/// What the parser must return for `line`, read with serde_json: (metric, labels sorted by name
/// with the last of a repeated name, timestamp, value), or `None` for a reject.
type Expected = (String, Vec<(String, String)>, i64, f64);

fn oracle(line: &str) -> Option<Expected> {
    let v: Value = serde_json::from_str(line).ok()?;
    let o = v.as_object()?;
    let metric = o.get("metric")?.as_str()?.to_owned();
    if metric.is_empty() {
        return None;
    }
    let mut labels: Vec<(String, String)> = match o.get("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect::<Option<_>>()?,
        Some(_) => return None,
    };
    labels.sort();
    let ts = match o.get("timestamp")? {
        // Integer milliseconds; a number with a fraction or an exponent is rounded to the
        // millisecond when it is finite and below 9e15 in magnitude.
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|v| v.is_finite() && v.abs() < 9.0e15)
                .map(|v| v.round() as i64)
        })?,
        Value::String(s) => parse_rfc3339(s)?,
        _ => return None,
    };
    let value = o.get("value")?.as_f64()?;
    value.is_finite().then_some((metric, labels, ts, value))
}

fn parsed(line: &str) -> Option<Expected> {
    let mut p = PointBuf::default();
    parse_json_line(line, &mut p).ok()?;
    let labels = (0..p.label_count())
        .map(|i| {
            let (k, v) = p.label(i);
            (k.to_owned(), v.to_owned())
        })
        .collect();
    Some((p.metric().to_owned(), labels, p.timestamp, p.value))
}

/// A JSON string literal: serde_json's escaping, or every non-ASCII character as `\uXXXX`.
fn literal(s: &str, ascii: bool) -> String {
    let json = serde_json::to_string(s).expect("string");
    if !ascii {
        return json;
    }
    let mut out = String::new();
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.]{0,8}",
        "[a-zA-Z0-9 \"\\\\/\u{e9}\u{1f600}\u{7}\n\t]{0,8}",
    ]
}

/// A JSON string literal of generated text.
fn string_literal() -> impl Strategy<Value = String> {
    (text(), any::<bool>()).prop_map(|(t, a)| literal(&t, a))
}

/// One field as JSON text, well-typed or not.
fn field(name: &'static str) -> BoxedStrategy<String> {
    let v = match name {
        "metric" => prop_oneof![4 => string_literal(), 1 => Just("12".to_owned())].boxed(),
        "labels" => prop_oneof![
            4 => prop::collection::vec(
                (prop_oneof![Just("a"), Just("b"), Just("zone"), Just("é")], string_literal(),
                 prop_oneof![9 => Just(true), 1 => Just(false)]),
                0..5,
            )
            .prop_map(|mut kv| {
                // serde_json keeps the last of a repeated name, so a bad value hidden behind a
                // later good one would read as valid: repeats only among string values.
                if kv.iter().any(|(_, _, ok)| !ok) {
                    let mut seen = Vec::new();
                    kv.retain(|(k, _, _)| {
                        let new = !seen.contains(k);
                        seen.push(*k);
                        new
                    });
                }
                let body: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v, ok)| {
                        format!("{}:{}", literal(k, false), if ok { v } else { "1".into() })
                    })
                    .collect();
                format!("{{{}}}", body.join(" , "))
            }),
            1 => Just("null".to_owned()),
            1 => Just("[]".to_owned()),
        ]
        .boxed(),
        "timestamp" => prop_oneof![
            3 => (-4_000_000_000_000i64..4_000_000_000_000).prop_map(|t| t.to_string()),
            2 => (0u32..3000, 0u32..14, 0u32..33, 0u32..25, 0u32..61)
                .prop_map(|(y, mo, d, h, mi)| format!("\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:07.25Z\"")),
            1 => Just("\"yesterday\"".to_owned()),
            1 => Just("1.5".to_owned()),
            1 => Just("true".to_owned()),
        ]
        .boxed(),
        "value" => prop_oneof![
            4 => any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| format!("{x:?}")),
            2 => any::<f64>().prop_filter("finite", |x| x.is_finite()).prop_map(|x| format!("{x:e}")),
            2 => any::<i64>().prop_map(|x| x.to_string()),
            1 => Just("1e400".to_owned()),
            1 => Just("\"NaN\"".to_owned()),
            1 => Just("null".to_owned()),
            1 => Just("-".to_owned()),
            1 => Just("01".to_owned()),
        ]
        .boxed(),
        _ => prop_oneof![
            Just("null".to_owned()),
            Just("[1, {\"a\": [true, false]}, \"x\\\"y\"]".to_owned()),
            Just("{\"metric\": \"inner\"}".to_owned()),
            Just("-0.5e-3".to_owned()),
            Just("[1,]".to_owned()),
        ]
        .boxed(),
    };
    v.prop_map(move |v| format!("\"{name}\":{v}")).boxed()
}

fn line() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![9 => Just(true), 1 => Just(false)], 5),
        field("metric"),
        field("labels"),
        field("timestamp"),
        field("value"),
        field("extra"),
        Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
        prop_oneof![Just(""), Just(" "), Just("\t "), Just("\n")],
        prop_oneof![10 => Just(""), 1 => Just("}"), 1 => Just(" x"), 1 => Just(",")],
    )
        .prop_map(|(present, m, l, t, v, x, order, ws, tail)| {
            let fields = [m, l, t, v, x];
            let body: Vec<&str> = order
                .iter()
                .filter(|&&i| present[i])
                .map(|&i| fields[i].as_str())
                .collect();
            format!(
                "{ws}{{{ws}{}{ws}}}{ws}{tail}",
                body.join(&format!("{ws},{ws}"))
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn json_point_parser_agrees_with_serde_json(line in line()) {
        let want = oracle(&line);
        let got = parsed(&line);
        match (&want, &got) {
            (Some(w), Some(g)) => {
                prop_assert_eq!(&w.0, &g.0);
                prop_assert_eq!(&w.1, &g.1);
                prop_assert_eq!(w.2, g.2);
                prop_assert_eq!(w.3.to_bits(), g.3.to_bits(), "value of {}", line);
            }
            (None, None) => {}
            _ => prop_assert!(false, "{line}\n serde_json: {want:?}\n parser: {got:?}"),
        }
    }
}
