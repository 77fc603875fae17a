//! Typed comparison for SQLite, which stores exact decimals and datetimes as text.
//!
//! Text order is wrong for both (`"10.5" < "9.5"`; `"…00.5Z" < "…00Z"`;
//! `"02:30:00-05:00"` is later than `"05:00:00Z"`), so every SQLite connection the
//! uploader opens registers two collations, and `sort_by` comparisons of decimal and
//! datetime columns use them ([`super::dialect::Dialect::collate`]). They are used in
//! the uploader's own statements only (never declared on a column), so other tools can
//! open the database without them.
//!
//! Both are total orders: values that parse compare by their meaning (equal numbers or
//! equal instants are equal whatever their spelling), and sort before values that do
//! not parse, which compare as text.

use std::cmp::Ordering;

/// Compares two decimal texts as numbers (`-1.50 < 2 < 10.5`), digit for digit at any
/// precision; an exponent (`1e5`) compares as a float.
pub fn decimal(a: &str, b: &str) -> Ordering {
    match (parse_decimal(a), parse_decimal(b)) {
        (Some(x), Some(y)) => x.cmp_to(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// Compares two datetime texts as instants. A value without an offset is taken as
/// UTC; a date alone is its midnight.
pub fn datetime(a: &str, b: &str) -> Ordering {
    match (instant(a), instant(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// A parsed decimal: sign, integer digits without leading zeros, fraction digits
/// without trailing zeros; or a float when it has an exponent.
enum Dec<'a> {
    Digits {
        neg: bool,
        int: &'a str,
        frac: &'a str,
    },
    Float(f64),
}

impl Dec<'_> {
    fn as_f64(&self) -> f64 {
        match self {
            Dec::Float(f) => *f,
            Dec::Digits { neg, int, frac } => {
                let v: f64 = format!("{int}.{frac}0").parse().unwrap_or(0.0);
                if *neg { -v } else { v }
            }
        }
    }

    fn cmp_to(&self, o: &Dec<'_>) -> Ordering {
        let (
            Dec::Digits {
                neg: an,
                int: ai,
                frac: af,
            },
            Dec::Digits {
                neg: bn,
                int: bi,
                frac: bf,
            },
        ) = (self, o)
        else {
            return self.as_f64().total_cmp(&o.as_f64());
        };
        let a_zero = ai.is_empty() && af.is_empty();
        let b_zero = bi.is_empty() && bf.is_empty();
        let an = *an && !a_zero;
        let bn = *bn && !b_zero;
        if an != bn {
            return if an {
                Ordering::Less
            } else {
                Ordering::Greater
            };
        }
        let mag = ai
            .len()
            .cmp(&bi.len())
            .then_with(|| ai.cmp(bi))
            .then_with(|| af.cmp(bf));
        if an { mag.reverse() } else { mag }
    }
}

fn parse_decimal(s: &str) -> Option<Dec<'_>> {
    let t = s.trim();
    if t.contains(['e', 'E']) {
        return t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Dec::Float);
    }
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some(Dec::Digits {
        neg,
        int: int.trim_start_matches('0'),
        frac: frac.trim_end_matches('0'),
    })
}

/// Seconds and nanoseconds since the epoch (UTC), by the core's datetime parser.
fn instant(s: &str) -> Option<(i64, u32)> {
    use anchovy_core::Value;
    let utc = match anchovy_core::row::parse_datetime(s) {
        Some(Value::DateTimeTz(dt)) => dt.naive_utc(),
        Some(Value::DateTime(dt)) => dt,
        _ => chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .ok()?
            .and_hms_opt(0, 0, 0)?,
    };
    let u = utc.and_utc();
    Some((u.timestamp(), u.timestamp_subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn decimals_compare_as_numbers() {
        assert_eq!(decimal("10.5", "9.5"), Greater);
        assert_eq!(decimal("9.50", "9.5"), Equal);
        assert_eq!(decimal("-0", "0.000"), Equal);
        assert_eq!(decimal("-10.5", "-9.5"), Less);
        assert_eq!(decimal("-1", "0.001"), Less);
        assert_eq!(decimal("007", "7"), Equal);
        assert_eq!(
            decimal(
                "123456789012345678901234567890.000000000000000000001",
                "123456789012345678901234567890"
            ),
            Greater
        );
        assert_eq!(decimal(".5", "0.4"), Greater);
        assert_eq!(decimal("1e3", "999"), Greater);
        assert_eq!(decimal("abc", "1"), Greater);
        assert_eq!(decimal("abc", "abd"), Less);
    }

    #[test]
    fn datetimes_compare_as_instants() {
        assert_eq!(
            datetime("2024-01-01T02:30:00-05:00", "2024-01-01T05:00:00Z"),
            Greater
        );
        assert_eq!(
            datetime("2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00Z"),
            Greater
        );
        assert_eq!(
            datetime("2024-01-01T07:30:00+00:00", "2024-01-01T02:30:00-05:00"),
            Equal
        );
        assert_eq!(
            datetime("2024-01-01 00:00:01", "2024-01-01T00:00:00Z"),
            Greater
        );
        assert_eq!(datetime("2024-01-02", "2024-01-01T23:59:59Z"), Greater);
        assert_eq!(
            datetime("2024-01-01 05:00:00+00:00", "2024-01-01T05:00:00Z"),
            Equal
        );
        assert_eq!(datetime("garbage", "2024-01-01"), Greater);
    }
}
