//! `timestamp,value` CSV (NAB's layout): the columns are found by name in the header; the
//! series is named after the file.

use telltale_core::reject::RejectReason;
use telltale_core::time::parse_rfc3339;

/// Column positions of a CSV file, read from its header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsvLayout {
    timestamp: usize,
    value: usize,
}

impl CsvLayout {
    /// Reads the header: it must name a `timestamp` and a `value` column (any order, other
    /// columns ignored). Returns `None` when it does not.
    pub fn from_header(header: &str) -> Option<Self> {
        let cols: Vec<&str> = header
            .trim_end_matches('\r')
            .split(',')
            .map(str::trim)
            .collect();
        let find = |n: &str| cols.iter().position(|c| c.eq_ignore_ascii_case(n));
        Some(Self {
            timestamp: find("timestamp")?,
            value: find("value")?,
        })
    }

    /// Parses one data line into (timestamp ms, value).
    /// Quoted fields are refused with a reason rather than split at a quoted comma: the columns
    /// telltale reads are never quoted in the layouts it takes (NAB's, exported series).
    pub fn parse(&self, line: &str) -> Result<(i64, f64), RejectReason> {
        let line = line.trim_end_matches('\r');
        if line.contains('"') {
            return Err(RejectReason::Malformed(
                "quoted CSV fields are not supported (write timestamp,value unquoted)",
            ));
        }
        let (mut ts, mut val) = (None, None);
        for (i, field) in line.split(',').enumerate() {
            if i == self.timestamp {
                ts = Some(field.trim());
            } else if i == self.value {
                val = Some(field.trim());
            }
        }
        let ts = ts.ok_or(RejectReason::MissingField("timestamp"))?;
        let val = val.ok_or(RejectReason::MissingField("value"))?;
        let ts = if ts.bytes().all(|b| b.is_ascii_digit() || b == b'-') && ts.len() < 17 {
            ts.parse::<i64>().map_err(|_| RejectReason::BadTimestamp)?
        } else {
            parse_rfc3339(ts).ok_or(RejectReason::BadTimestamp)?
        };
        let v: f64 = val.parse().map_err(|_| RejectReason::NonFiniteValue)?;
        if !v.is_finite() {
            return Err(RejectReason::NonFiniteValue);
        }
        Ok((ts, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_field_is_rejected_with_a_reason_not_shifted() {
        let l = CsvLayout::from_header("timestamp,note,value").unwrap();
        let r = l.parse(r#"2024-01-01 00:00:00,"a, b",5"#);
        assert!(
            matches!(r, Err(RejectReason::Malformed(m)) if m.contains("quoted")),
            "{r:?}"
        );
        assert_eq!(
            l.parse("2024-01-01 00:00:00,ab,5"),
            Ok((1_704_067_200_000, 5.0))
        );
    }

    #[test]
    fn csv_layout_from_header_and_rows() {
        let l = CsvLayout::from_header("timestamp,value").unwrap();
        assert_eq!(
            l.parse("2014-07-01 00:30:00,8127").unwrap(),
            (1_404_174_600_000, 8127.0)
        );
        assert_eq!(
            l.parse("1700000000000,1.5\r").unwrap(),
            (1_700_000_000_000, 1.5)
        );
        assert_eq!(
            l.parse("2014-07-01 00:30:00,nan"),
            Err(RejectReason::NonFiniteValue)
        );
        assert_eq!(
            l.parse("2014-07-01 00:30:00"),
            Err(RejectReason::MissingField("value"))
        );
        let l = CsvLayout::from_header("value,label,timestamp").unwrap();
        assert_eq!(l.parse("2.5,0,10").unwrap(), (10, 2.5));
        assert!(CsvLayout::from_header("a,b").is_none());
    }
}
