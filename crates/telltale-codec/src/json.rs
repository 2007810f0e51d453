//! The native JSON-lines point format.
//!
//! The JSON parser is hand-written for the one object shape we accept, copies the strings it
//! keeps into a reusable scratch buffer and allocates nothing once warm: parsing is the larger
//! part of a replay's cost, so it is kept tight.

use std::ops::Range;

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use telltale_core::key::{IdMap, SeriesKey, series_id};
use telltale_core::reject::{MAX_LABELS, RejectReason};
use telltale_core::time::parse_rfc3339;

type R<T> = Result<T, RejectReason>;

/// Bytes that end a plain run inside a JSON string: `"`, `\\` and control characters.
static SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

#[derive(Clone, Copy)]
enum Field {
    Metric,
    Labels,
    Timestamp,
    Value,
    Other,
}

fn malformed<T>(what: &'static str) -> R<T> {
    Err(RejectReason::Malformed(what))
}

/// A parsed point whose strings live in the parser's scratch buffer.
#[derive(Debug, Default)]
pub struct PointBuf {
    scratch: String,
    key_scratch: String,
    /// The metric and labels exactly as written in the line (for [`PointBuf::raw_series_hash`]).
    raw_metric: Range<usize>,
    raw_labels: Range<usize>,
    metric: Range<usize>,
    labels: Vec<(Range<usize>, Range<usize>)>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The observed value (finite).
    pub value: f64,
}

impl PointBuf {
    /// The metric name.
    pub fn metric(&self) -> &str {
        &self.scratch[self.metric.clone()]
    }

    /// Number of labels.
    pub fn label_count(&self) -> usize {
        self.labels.len()
    }

    /// The i-th label (sorted by name after [`PointBuf::sort_labels`]).
    pub fn label(&self, i: usize) -> (&str, &str) {
        let (k, v) = &self.labels[i];
        (&self.scratch[k.clone()], &self.scratch[v.clone()])
    }

    /// Sorts labels by name; a repeated name keeps its last value.
    pub fn sort_labels(&mut self) {
        let s = &self.scratch;
        // Producers usually send labels in a fixed, often sorted, order: check before sorting.
        if self
            .labels
            .windows(2)
            .all(|w| s[w[0].0.clone()] < s[w[1].0.clone()])
        {
            return;
        }
        // Stable sort keeps input order among equal names, so the last one wins below.
        self.labels
            .sort_by(|a, b| s[a.0.clone()].cmp(&s[b.0.clone()]));
        let mut w = 0;
        for r in 0..self.labels.len() {
            if w > 0 && s[self.labels[w - 1].0.clone()] == s[self.labels[r].0.clone()] {
                self.labels[w - 1] = self.labels[r].clone();
            } else {
                self.labels[w] = self.labels[r].clone();
                w += 1;
            }
        }
        self.labels.truncate(w);
    }

    fn clear(&mut self) {
        self.scratch.clear();
        self.metric = 0..0;
        self.raw_metric = 0..0;
        self.raw_labels = 0..0;
        self.labels.clear();
    }

    /// A hash of the metric and labels exactly as they were written in the JSON line, before
    /// decoding and sorting. Producers write a series the same way every time, so a parser can
    /// map this cheap hash to the series id and skip building the canonical key on every point.
    /// (Two spellings of one series get two entries that map to the same id.)
    pub fn raw_series_hash(&self) -> u64 {
        let m = xxh3_64(&self.scratch.as_bytes()[self.raw_metric.clone()]);
        xxh3_64_with_seed(&self.scratch.as_bytes()[self.raw_labels.clone()], m)
    }

    /// Sets the point from parts (CSV input, generators).
    pub fn set(&mut self, metric: &str, labels: &[(&str, &str)], timestamp: i64, value: f64) {
        self.clear();
        self.metric = self.push_str(metric);
        for (k, v) in labels {
            let k = self.push_str(k);
            let v = self.push_str(v);
            self.labels.push((k, v));
        }
        self.timestamp = timestamp;
        self.value = value;
        self.sort_labels();
    }

    fn push_str(&mut self, s: &str) -> Range<usize> {
        let start = self.scratch.len();
        self.scratch.push_str(s);
        start..self.scratch.len()
    }
}

impl PointBuf {
    /// The canonical key of this point's series (labels sorted, as the parser leaves them).
    pub fn series_key(&self) -> SeriesKey {
        SeriesKey {
            name: self.metric().into(),
            labels: (0..self.label_count())
                .map(|i| {
                    let (k, v) = self.label(i);
                    (k.into(), v.into())
                })
                .collect(),
        }
    }

    /// The id of this point's series (labels sorted, as the parser leaves them); `scratch` is
    /// reused between calls.
    pub fn series_id(&self, scratch: &mut Vec<u8>) -> u64 {
        series_id(
            self.metric(),
            (0..self.label_count()).map(|i| self.label(i)),
            scratch,
        )
    }
}

/// Series ids of parsed points, cached by the raw form of their metric and labels (as written,
/// before unescaping and sorting): producers write a series the same way every time, so a hit
/// skips building the canonical key. Bounded: cleared when it reaches [`RawIdCache::MAX`].
#[derive(Debug, Default)]
pub struct RawIdCache {
    ids: IdMap<u64>,
    scratch: Vec<u8>,
}

impl RawIdCache {
    /// Entries before the cache is cleared.
    pub const MAX: usize = 1 << 22;

    /// The series id of `p` (labels sorted, as the parser leaves them), and whether this
    /// spelling was not cached (then the caller may need the series' key).
    #[inline]
    pub fn id(&mut self, p: &PointBuf) -> (u64, bool) {
        let raw = p.raw_series_hash();
        if let Some(id) = self.ids.get(&raw) {
            return (*id, false);
        }
        let id = p.series_id(&mut self.scratch);
        if self.ids.len() >= Self::MAX {
            self.ids.clear();
        }
        self.ids.insert(raw, id);
        (id, true)
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    s: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn expect(&mut self, c: u8, what: &'static str) -> R<()> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            malformed(what)
        }
    }

    /// Reads a JSON string whose text the caller keeps. `out` must start with a copy of the
    /// line: a string without escapes (the common case) is returned as its range in the line,
    /// with no copy; one with escapes is decoded and appended to `out`.
    #[inline]
    fn string_range(&mut self, out: &mut String) -> R<Range<usize>> {
        self.ws();
        if self.peek() != Some(b'"') {
            return malformed("expected a string");
        }
        let start = self.i + 1;
        let end = self.run_end(start);
        if self.b.get(end) == Some(&b'"') {
            self.i = end + 1;
            return Ok(start..end);
        }
        let from = out.len();
        self.string_into(out)?;
        Ok(from..out.len())
    }

    /// Parses a JSON number, giving exactly what `str::parse::<f64>` gives: decimals of at
    /// most 15 digits and 22 fractional places take Clinger's fast path (both the digits and
    /// the power of ten are exact doubles, so one division rounds correctly); others go to
    /// the standard parser.
    #[inline]
    fn number_f64(&mut self) -> R<f64> {
        const POW10: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        self.ws();
        let (b, start) = (self.b, self.i);
        let mut i = start;
        let neg = b.get(i) == Some(&b'-');
        i += usize::from(neg);
        let (mut mant, mut digits, mut frac) = (0u64, 0usize, 0usize);
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            mant = mant.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
            digits += 1;
            i += 1;
        }
        let int_digits = digits;
        let dot = b.get(i) == Some(&b'.');
        if dot {
            i += 1;
            while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
                mant = mant.wrapping_mul(10).wrapping_add(u64::from(d - b'0'));
                digits += 1;
                frac += 1;
                i += 1;
            }
        }
        let exotic = matches!(b.get(i), Some(b'e' | b'E' | b'+' | b'-' | b'.'));
        // Outside JSON's grammar (`01`, `1.`, `.5`): the slow path refuses them.
        let off_grammar = int_digits == 0
            || (dot && frac == 0)
            || (int_digits > 1 && b[start + usize::from(neg)] == b'0');
        if digits == 0 || digits > 15 || frac > 22 || exotic || off_grammar {
            return self
                .number_text()?
                .parse()
                .map_err(|_| RejectReason::Malformed("bad number"));
        }
        self.i = i;
        let v = mant as f64 / POW10[frac];
        Ok(if neg { -v } else { v })
    }

    /// Parses an integer of at most 18 digits directly; anything else through
    /// [`parse_timestamp_number`].
    #[inline]
    fn timestamp_number(&mut self) -> R<i64> {
        self.ws();
        let (b, start) = (self.b, self.i);
        let mut i = start;
        let neg = b.get(i) == Some(&b'-');
        i += usize::from(neg);
        let mut v = 0i64;
        while let Some(d) = b.get(i).filter(|c| c.is_ascii_digit()) {
            v = v.wrapping_mul(10).wrapping_add(i64::from(d - b'0'));
            i += 1;
        }
        let digits = i - start - usize::from(neg);
        let leading_zero = digits > 1 && b[start + usize::from(neg)] == b'0';
        if digits == 0
            || digits > 18
            || leading_zero
            || matches!(b.get(i), Some(b'e' | b'E' | b'+' | b'-' | b'.'))
        {
            return parse_timestamp_number(self.number_text()?);
        }
        self.i = i;
        Ok(if neg { -v } else { v })
    }

    /// Reads a JSON string starting at `"` and appends its decoded text to `out`.
    fn string_into(&mut self, out: &mut String) -> R<()> {
        self.ws();
        if self.peek() != Some(b'"') {
            return malformed("expected a string");
        }
        self.i += 1;
        // Fast scan: plain runs are copied in one go.
        loop {
            let run = self.i;
            self.i = self.run_end(self.i);
            out.push_str(&self.s[run..self.i]);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self
                        .peek()
                        .ok_or(RejectReason::Malformed("unterminated string"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return malformed("lone surrogate in string");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return malformed("bad surrogate pair in string");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(cp)
                                    .ok_or(RejectReason::Malformed("bad \\u escape"))?,
                            );
                        }
                        _ => return malformed("bad escape in string"),
                    }
                }
                Some(_) => return malformed("control character in string"),
                None => return malformed("unterminated string"),
            }
        }
    }

    /// Index of the first byte at or after `from` that ends a plain string run: a quote, a
    /// backslash or a control character. Eight bytes at a time (SWAR: the "has a zero byte" bit
    /// trick, whose lowest flagged byte is exact), then a table lookup per remaining byte.
    #[inline(always)]
    fn run_end(&self, from: usize) -> usize {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGHS: u64 = 0x8080_8080_8080_8080;
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
        let mut i = from;
        while let Some(word) = self.b.get(i..i + 8) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            let hit = has_zero(w ^ (ONES * u64::from(b'"')))
                | has_zero(w ^ (ONES * u64::from(b'\\')))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGHS);
            if hit != 0 {
                return i + (hit.trailing_zeros() / 8) as usize;
            }
            i += 8;
        }
        while i < self.b.len() && !SPECIAL[self.b[i] as usize] {
            i += 1;
        }
        i
    }

    /// Reads a field name. Names without escapes (all of ours) are returned without copying;
    /// others are decoded into `scratch`.
    #[inline]
    fn key<'s>(&mut self, scratch: &'s mut String) -> R<&'s str>
    where
        'a: 's,
    {
        self.ws();
        if self.peek() != Some(b'"') {
            return malformed("expected a field name");
        }
        let start = self.i + 1;
        let end = self.run_end(start);
        if self.b.get(end) == Some(&b'"') {
            self.i = end + 1;
            return Ok(&self.s[start..end]);
        }
        scratch.clear();
        self.string_into(scratch)?;
        Ok(scratch.as_str())
    }

    /// Skips a string without decoding it.
    fn skip_string(&mut self) -> R<()> {
        self.ws();
        if self.peek() != Some(b'"') {
            return malformed("expected a string");
        }
        self.i += 1;
        loop {
            self.i = self.run_end(self.i);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => self.i += 2,
                Some(_) => return malformed("control character in string"),
                None => return malformed("unterminated string"),
            }
        }
    }

    fn hex4(&mut self) -> R<u32> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or(RejectReason::Malformed("bad \\u escape"))?;
        let v =
            u32::from_str_radix(h, 16).map_err(|_| RejectReason::Malformed("bad \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    /// The raw text of a JSON number.
    #[inline]
    fn number_text(&mut self) -> R<&'a str> {
        self.ws();
        let (b, start) = (self.b, self.i);
        let digits_from = |mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        // JSON's grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
        let mut i = start + usize::from(b.get(start) == Some(&b'-'));
        i = match b.get(i) {
            Some(b'0') => i + 1,
            Some(b'1'..=b'9') => digits_from(i),
            _ if i == start => return malformed("expected a number"),
            _ => return malformed("bad number"),
        };
        if b.get(i) == Some(&b'.') {
            let end = digits_from(i + 1);
            if end == i + 1 {
                return malformed("bad number");
            }
            i = end;
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1 + usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
            let end = digits_from(i);
            if end == i {
                return malformed("bad number");
            }
            i = end;
        }
        self.i = i;
        Ok(&self.s[start..i])
    }

    /// Skips any JSON value (for fields we do not use).
    fn skip_value(&mut self, depth: u32) -> R<()> {
        if depth > 64 {
            return malformed("nesting too deep");
        }
        self.ws();
        match self.peek() {
            Some(b'"') => self.skip_string(),
            Some(b'{') | Some(b'[') => {
                let close = if self.peek() == Some(b'{') {
                    b'}'
                } else {
                    b']'
                };
                let object = close == b'}';
                self.i += 1;
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    if object {
                        self.skip_string()?;
                        self.expect(b':', "expected `:`")?;
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(c) if c == close => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return malformed("expected `,` or a closing bracket"),
                    }
                }
            }
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            _ => self.number_text().map(|_| ()),
        }
    }

    fn literal(&mut self, lit: &'static str) -> R<()> {
        if self.b[self.i..].starts_with(lit.as_bytes()) {
            self.i += lit.len();
            Ok(())
        } else {
            malformed("unexpected token")
        }
    }
}

fn parse_timestamp_number(text: &str) -> R<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v.abs() < 9.0e15 => Ok(v.round() as i64),
        _ => Err(RejectReason::BadTimestamp),
    }
}

/// Parses one JSON line of the native format into `out`:
/// `{"metric": "...", "labels": {"k": "v", ...}, "timestamp": <ms or RFC 3339>, "value": <number>}`.
/// `labels` is optional; unknown fields are ignored; labels come back sorted by name.
pub fn parse_json_line(line: &str, out: &mut PointBuf) -> Result<(), RejectReason> {
    out.clear();
    // Strings without escapes are kept as ranges into this copy of the line.
    out.scratch.push_str(line);
    let mut c = Cursor {
        b: line.as_bytes(),
        s: line,
        i: 0,
    };
    c.expect(b'{', "expected a JSON object")?;
    let mut key_scratch = std::mem::take(&mut out.key_scratch);
    let result = parse_fields(&mut c, out, &mut key_scratch);
    out.key_scratch = key_scratch;
    result
}

fn parse_fields(c: &mut Cursor<'_>, out: &mut PointBuf, key_scratch: &mut String) -> R<()> {
    let (mut have_metric, mut have_ts, mut have_value) = (false, false, false);
    c.ws();
    if c.peek() == Some(b'}') {
        c.i += 1;
    } else {
        loop {
            let key = c.key(key_scratch)?;
            let field = match key {
                "metric" => Field::Metric,
                "labels" => Field::Labels,
                "timestamp" => Field::Timestamp,
                "value" => Field::Value,
                _ => Field::Other,
            };
            c.expect(b':', "expected `:` after a field name")?;
            match field {
                Field::Metric => {
                    c.ws();
                    let raw_start = c.i;
                    out.metric = c
                        .string_range(&mut out.scratch)
                        .map_err(|_| RejectReason::Malformed("`metric` must be a string"))?;
                    out.raw_metric = raw_start..c.i;
                    have_metric = true;
                }
                Field::Labels => {
                    c.ws();
                    let raw_start = c.i;
                    if c.peek() == Some(b'n') {
                        c.literal("null")?;
                    } else {
                        c.expect(b'{', "`labels` must be an object of strings")?;
                        c.ws();
                        if c.peek() == Some(b'}') {
                            c.i += 1;
                        } else {
                            loop {
                                if out.labels.len() == MAX_LABELS {
                                    return Err(RejectReason::TooManyLabels);
                                }
                                let k = c.string_range(&mut out.scratch)?;
                                c.expect(b':', "expected `:` in labels")?;
                                let v = c.string_range(&mut out.scratch).map_err(|_| {
                                    RejectReason::Malformed("label values must be strings")
                                })?;
                                out.labels.push((k, v));
                                c.ws();
                                match c.peek() {
                                    Some(b',') => c.i += 1,
                                    Some(b'}') => {
                                        c.i += 1;
                                        break;
                                    }
                                    _ => return malformed("expected `,` or `}` in labels"),
                                }
                            }
                        }
                    }
                    out.raw_labels = raw_start..c.i;
                }
                Field::Timestamp => {
                    c.ws();
                    out.timestamp = if c.peek() == Some(b'"') {
                        let r = c.string_range(&mut out.scratch)?;
                        parse_rfc3339(&out.scratch[r]).ok_or(RejectReason::BadTimestamp)?
                    } else {
                        c.timestamp_number()?
                    };
                    have_ts = true;
                }
                Field::Value => {
                    c.ws();
                    if !matches!(c.peek(), Some(b'-' | b'0'..=b'9')) {
                        // null, strings such as "NaN", booleans: not a finite number.
                        c.skip_value(0)?;
                        return Err(RejectReason::NonFiniteValue);
                    }
                    let v = c
                        .number_f64()
                        .map_err(|_| RejectReason::Malformed("bad number in `value`"))?;
                    if !v.is_finite() {
                        return Err(RejectReason::NonFiniteValue);
                    }
                    out.value = v;
                    have_value = true;
                }
                Field::Other => c.skip_value(0)?,
            }
            c.ws();
            match c.peek() {
                Some(b',') => c.i += 1,
                Some(b'}') => {
                    c.i += 1;
                    break;
                }
                _ => return malformed("expected `,` or `}` after a field"),
            }
        }
    }
    c.ws();
    if c.i != c.b.len() {
        return malformed("trailing characters after the object");
    }
    if !have_metric {
        return Err(RejectReason::MissingField("metric"));
    }
    if !have_ts {
        return Err(RejectReason::MissingField("timestamp"));
    }
    if !have_value {
        return Err(RejectReason::MissingField("value"));
    }
    if out.metric.is_empty() {
        return malformed("`metric` is empty");
    }
    out.sort_labels();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<PointBuf, RejectReason> {
        let mut p = PointBuf::default();
        parse_json_line(line, &mut p).map(|_| p)
    }

    #[test]
    fn parses_the_native_format() {
        let p = parse(
            r#"{"metric":"llm.latency_p99_ms","labels":{"region":"eu","model":"llama3-8b"},"timestamp":1700000000000,"value":123.5}"#,
        )
        .unwrap();
        assert_eq!(p.metric(), "llm.latency_p99_ms");
        assert_eq!(p.label_count(), 2);
        assert_eq!(p.label(0), ("model", "llama3-8b"));
        assert_eq!(p.label(1), ("region", "eu"));
        assert_eq!(p.timestamp, 1_700_000_000_000);
        assert_eq!(p.value, 123.5);
    }

    #[test]
    fn accepts_rfc3339_escapes_unknown_fields_and_whitespace() {
        let p = parse(
            " { \"value\" : -1e3 , \"extra\": [1, {\"a\": null}], \"metric\": \"a\\\"b\\u00e9\\ud83d\\ude00\", \"timestamp\": \"2024-01-01T00:00:00Z\" } ",
        )
        .unwrap();
        assert_eq!(p.metric(), "a\"bé😀");
        assert_eq!(p.label_count(), 0);
        assert_eq!(p.timestamp, 1_704_067_200_000);
        assert_eq!(p.value, -1000.0);
    }

    #[test]
    fn rejects_bad_records_with_a_reason() {
        let cases = [
            ("", RejectReason::Malformed("expected a JSON object")),
            (
                "{\"metric\":\"m\",\"timestamp\":1}",
                RejectReason::MissingField("value"),
            ),
            (
                "{\"metric\":\"m\",\"value\":1}",
                RejectReason::MissingField("timestamp"),
            ),
            (
                "{\"timestamp\":1,\"value\":1}",
                RejectReason::MissingField("metric"),
            ),
            (
                "{\"metric\":\"m\",\"timestamp\":1,\"value\":\"NaN\"}",
                RejectReason::NonFiniteValue,
            ),
            (
                "{\"metric\":\"m\",\"timestamp\":1,\"value\":null}",
                RejectReason::NonFiniteValue,
            ),
            (
                "{\"metric\":\"m\",\"timestamp\":1,\"value\":1e999}",
                RejectReason::NonFiniteValue,
            ),
            (
                "{\"metric\":\"m\",\"timestamp\":\"yesterday\",\"value\":1}",
                RejectReason::BadTimestamp,
            ),
            (
                "{\"metric\":\"m\",\"timestamp\":1,\"value\":1} x",
                RejectReason::Malformed("trailing characters after the object"),
            ),
            (
                "{\"metric\":\"m\",\"labels\":{\"a\":1},\"timestamp\":1,\"value\":1}",
                RejectReason::Malformed("label values must be strings"),
            ),
            (
                "{\"metric\":\"m\",\"timestamp\":1,\"value\":1",
                RejectReason::Malformed("expected `,` or `}` after a field"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).unwrap_err(), want, "{line}");
        }
    }

    #[test]
    fn string_scan_stops_at_the_first_special_byte_at_any_offset() {
        // Every position of a quote, backslash or control byte, inside and after 8-byte words,
        // after bytes >= 0x80 (UTF-8) that the word trick must not mistake for specials.
        for len in 0..40 {
            for special in ['"', '\\', '\u{1}', '\u{1f}'] {
                let body: String = (0..len)
                    .map(|i| if i % 3 == 0 { 'é' } else { 'a' })
                    .collect();
                let text = format!("{body}{special}tail");
                let c = Cursor {
                    b: text.as_bytes(),
                    s: &text,
                    i: 0,
                };
                assert_eq!(c.run_end(0), body.len(), "{text:?}");
            }
            let plain: String = "x".repeat(len);
            let c = Cursor {
                b: plain.as_bytes(),
                s: &plain,
                i: 0,
            };
            assert_eq!(c.run_end(0), len);
        }
    }

    #[test]
    fn fast_number_paths_agree_with_the_standard_parser() {
        let mut p = PointBuf::default();
        for text in [
            "0",
            "-0",
            "1",
            "186.3522",
            "-2.5",
            "0.1",
            "0.30000000000000004",
            "123456789012345",
            "1234567890123456",
            "9007199254740993",
            "1e3",
            "-1.5E-7",
            "0.0000000000000000000001",
            "3.141592653589793",
            "100.5",
            "42.0",
        ] {
            let line = format!(r#"{{"metric":"m","timestamp":{text},"value":{text}}}"#);
            match parse_json_line(&line, &mut p) {
                Ok(()) => {
                    assert_eq!(
                        p.value.to_bits(),
                        text.parse::<f64>().unwrap().to_bits(),
                        "{text}"
                    );
                }
                Err(e) => assert!(
                    text.contains('.') || text.contains('e') || text.contains('E'),
                    "{text}: {e}"
                ),
            }
            let line = format!(r#"{{"metric":"m","timestamp":1,"value":{text}}}"#);
            parse_json_line(&line, &mut p).unwrap();
            assert_eq!(
                p.value.to_bits(),
                text.parse::<f64>().unwrap().to_bits(),
                "{text}"
            );
        }
        // Outside JSON's number grammar: refused in every position.
        for text in ["01", "-01", "100.", ".5", "-", "1e", "1e+", "+1", "00"] {
            for line in [
                format!(r#"{{"metric":"m","timestamp":1,"value":{text}}}"#),
                format!(r#"{{"metric":"m","timestamp":{text},"value":1}}"#),
                format!(r#"{{"metric":"m","timestamp":1,"value":1,"x":{text}}}"#),
            ] {
                assert!(parse_json_line(&line, &mut p).is_err(), "{line}");
            }
        }
        for (text, want) in [
            ("1700000000000", 1_700_000_000_000),
            ("-5", -5),
            ("1.6e12", 1_600_000_000_000),
            ("12.7", 13),
        ] {
            let line = format!(r#"{{"metric":"m","timestamp":{text},"value":1}}"#);
            parse_json_line(&line, &mut p).unwrap();
            assert_eq!(p.timestamp, want, "{text}");
        }
    }

    #[test]
    fn raw_series_hash_follows_the_written_form() {
        let a =
            parse(r#"{"metric":"m","labels":{"a":"1","b":"2"},"timestamp":1,"value":1}"#).unwrap();
        let b =
            parse(r#"{"value":7,"timestamp":9,"labels":{"a":"1","b":"2"},"metric":"m"}"#).unwrap();
        let c =
            parse(r#"{"metric":"m","labels":{"a":"1","b":"3"},"timestamp":1,"value":1}"#).unwrap();
        let d =
            parse(r#"{"metric":"n","labels":{"a":"1","b":"2"},"timestamp":1,"value":1}"#).unwrap();
        assert_eq!(a.raw_series_hash(), b.raw_series_hash());
        assert_ne!(a.raw_series_hash(), c.raw_series_hash());
        assert_ne!(a.raw_series_hash(), d.raw_series_hash());
    }

    #[test]
    fn repeated_label_names_keep_the_last_value() {
        let p =
            parse(r#"{"metric":"m","labels":{"a":"1","b":"2","a":"3"},"timestamp":1,"value":1}"#)
                .unwrap();
        assert_eq!(p.label_count(), 2);
        assert_eq!(p.label(0), ("a", "3"));
    }
}
