//! InfluxDB line protocol: `measurement[,tag=value…] field=value[,field=value…] [timestamp]`.
//!
//! Each numeric field becomes a point of the series `<measurement>_<field>` whose labels are the
//! line's tags: floats as they are, integers (`1i`) and unsigned integers (`1u`) converted to
//! floats, booleans as 1 and 0. String fields are not numeric and are skipped; a line with no
//! numeric field is rejected. Escapes follow the protocol: `\,` and `\ ` in measurements, `\,`,
//! `\=` and `\ ` in tag keys, tag values and field keys, `\"` and `\\` in string values. The
//! timestamp is an integer in the configured [`Precision`] (nanoseconds by default, as Telegraf
//! and the InfluxDB clients write it); a line without one is rejected (the engine scores event
//! time, never its own clock). `#` starts a comment line.
//!
//! The parser borrows the line: names and tags are unescaped only when a series is seen for the
//! first time (see [`crate::decode::Decoder`]), so a known series costs no allocation.

use std::ops::Range;

use telltale_core::reject::RejectReason;

/// Unit of line protocol timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds (the protocol's default).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// `ts` in this unit as milliseconds since the epoch (rounded down).
    pub fn to_ms(self, ts: i64) -> i64 {
        match self {
            Precision::Ns => ts.div_euclid(1_000_000),
            Precision::Us => ts.div_euclid(1_000),
            Precision::Ms => ts,
            Precision::S => ts.saturating_mul(1000),
        }
    }
}

/// A parsed line: ranges into the line's text (escapes still in place).
#[derive(Debug, Default)]
pub struct Line {
    /// Measurement and tags as written (`cpu,host=a`): the series set's raw spelling.
    pub series: Range<usize>,
    /// The measurement.
    pub measurement: Range<usize>,
    /// Tag keys and values.
    pub tags: Vec<(Range<usize>, Range<usize>)>,
    /// Numeric fields: key range and value.
    pub fields: Vec<(Range<usize>, f64)>,
    /// Timestamp in the line's precision.
    pub timestamp: i64,
}

type R<T> = Result<T, RejectReason>;

fn bad<T>(what: &'static str) -> R<T> {
    Err(RejectReason::Malformed(what))
}

/// Reads up to an unescaped byte of `stops` (or the end); returns the range read.
fn until(b: &[u8], i: &mut usize, stops: &[u8]) -> Range<usize> {
    let start = *i;
    while *i < b.len() {
        let c = b[*i];
        if c == b'\\' && *i + 1 < b.len() {
            *i += 2;
            continue;
        }
        if stops.contains(&c) {
            break;
        }
        *i += 1;
    }
    start..*i
}

/// Parses `text` (one line, no line break) into `out`.
pub fn parse_line(text: &str, out: &mut Line) -> R<()> {
    let b = text.as_bytes();
    out.tags.clear();
    out.fields.clear();
    let mut i = 0;
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    let start = i;
    out.measurement = until(b, &mut i, b", ");
    if out.measurement.is_empty() {
        return bad("line protocol: no measurement");
    }
    while i < b.len() && b[i] == b',' {
        i += 1;
        let k = until(b, &mut i, b"=, ");
        if k.is_empty() || i >= b.len() || b[i] != b'=' {
            return bad("line protocol: a tag needs key=value");
        }
        i += 1;
        let v = until(b, &mut i, b", ");
        if v.is_empty() {
            return bad("line protocol: empty tag value");
        }
        out.tags.push((k, v));
    }
    out.series = start..i;
    if i >= b.len() || b[i] != b' ' {
        return bad("line protocol: no field set");
    }
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    loop {
        let k = until(b, &mut i, b"=, ");
        if k.is_empty() || i >= b.len() || b[i] != b'=' {
            return bad("line protocol: a field needs key=value");
        }
        i += 1;
        if i < b.len() && b[i] == b'"' {
            // A string field: not a number, skipped.
            i += 1;
            loop {
                match b.get(i) {
                    None => return bad("line protocol: unterminated string field"),
                    Some(b'\\') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
        } else {
            let v = until(b, &mut i, b", ");
            let value = field_value(&text[v])?;
            out.fields.push((k, value));
        }
        if i < b.len() && b[i] == b',' {
            i += 1;
            continue;
        }
        break;
    }
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    let ts_start = i;
    while i < b.len() && !b[i].is_ascii_whitespace() {
        i += 1;
    }
    let ts = &text[ts_start..i];
    if !text[i..].trim().is_empty() {
        return bad("line protocol: text after the timestamp");
    }
    if ts.is_empty() {
        return Err(RejectReason::MissingField("timestamp"));
    }
    out.timestamp = ts.parse::<i64>().map_err(|_| RejectReason::BadTimestamp)?;
    if out.fields.is_empty() {
        return bad("line protocol: no numeric field");
    }
    Ok(())
}

/// A field's value as a number: float, `…i`, `…u`, or a boolean.
fn field_value(v: &str) -> R<f64> {
    match v {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        "" => return bad("line protocol: empty field value"),
        _ => {}
    }
    let value = if let Some(int) = v.strip_suffix('i') {
        int.parse::<i64>()
            .map(|x| x as f64)
            .map_err(|_| RejectReason::Malformed("line protocol: bad integer field"))?
    } else if let Some(uint) = v.strip_suffix('u') {
        uint.parse::<u64>()
            .map(|x| x as f64)
            .map_err(|_| RejectReason::Malformed("line protocol: bad unsigned field"))?
    } else {
        // The protocol's floats: digits, sign, point, exponent (no `nan`, no `inf`).
        if !v
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            return bad("line protocol: bad field value");
        }
        v.parse::<f64>()
            .map_err(|_| RejectReason::Malformed("line protocol: bad float field"))?
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(RejectReason::NonFiniteValue)
    }
}

/// `raw` with the protocol's backslash escapes removed (`\` before any of `escapable`).
pub fn unescape(raw: &str, escapable: &[u8], out: &mut String) {
    out.clear();
    let b = raw.as_bytes();
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && escapable.contains(&b[i + 1]) {
            out.push_str(&raw[last..i]);
            last = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[last..]);
}

/// Escapable bytes of a measurement.
pub const MEASUREMENT_ESCAPES: &[u8] = b", \\";
/// Escapable bytes of tag keys, tag values and field keys.
pub const KEY_ESCAPES: &[u8] = b",= \\";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> R<Line> {
        let mut l = Line::default();
        parse_line(text, &mut l).map(|()| l)
    }

    #[test]
    fn a_line_gives_its_numeric_fields_tags_and_timestamp() {
        let t = r#"cpu,host=a,region=eu usage_user=1.5,usage_idle=98i,up=true,note="x y" 1700000000000000000"#;
        let l = parse(t).unwrap();
        assert_eq!(&t[l.measurement.clone()], "cpu");
        assert_eq!(&t[l.series.clone()], "cpu,host=a,region=eu");
        assert_eq!(l.tags.len(), 2);
        let fields: Vec<(&str, f64)> = l.fields.iter().map(|(k, v)| (&t[k.clone()], *v)).collect();
        assert_eq!(
            fields,
            vec![("usage_user", 1.5), ("usage_idle", 98.0), ("up", 1.0)]
        );
        assert_eq!(Precision::Ns.to_ms(l.timestamp), 1_700_000_000_000);
    }

    #[test]
    fn escapes_are_kept_out_of_the_structure() {
        let t = r#"my\ meas,ta\,g=v\ 1 f\=x=2u,s="a \"q\", b" 5"#;
        let l = parse(t).unwrap();
        let mut s = String::new();
        unescape(&t[l.measurement.clone()], MEASUREMENT_ESCAPES, &mut s);
        assert_eq!(s, "my meas");
        unescape(&t[l.tags[0].0.clone()], KEY_ESCAPES, &mut s);
        assert_eq!(s, "ta,g");
        unescape(&t[l.tags[0].1.clone()], KEY_ESCAPES, &mut s);
        assert_eq!(s, "v 1");
        unescape(&t[l.fields[0].0.clone()], KEY_ESCAPES, &mut s);
        assert_eq!(s, "f=x");
        assert_eq!(l.fields[0].1, 2.0);
    }

    #[test]
    fn bad_lines_are_rejected_with_a_reason() {
        for (line, code) in [
            ("cpu", "malformed"),
            ("cpu,host usage=1 1", "malformed"),
            ("cpu usage=abc 1", "malformed"),
            ("cpu usage=1", "missing_field"),
            ("cpu usage=1 12x", "bad_timestamp"),
            (r#"cpu s="only text" 1"#, "malformed"),
            (r#"cpu s="unterminated 1"#, "malformed"),
            ("cpu usage=1 1 extra", "malformed"),
            ("cpu usage=1e999 1", "non_finite_value"),
            ("cpu usage=nan 1", "malformed"),
            ("cpu usage=99999999999999999999i 1", "malformed"),
            (",host=a usage=1 1", "malformed"),
        ] {
            let got = parse(line).err().map(|r| r.code());
            assert_eq!(got, Some(code), "{line}");
        }
    }
}
