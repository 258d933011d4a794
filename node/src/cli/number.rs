//! Numbers on the command line and in human output.
//!
//! Every numeric flag parses with one of the value parsers here, so every
//! flag accepts the same spellings: `325000000`, `325_000_000`, `325,000,000`
//! and, where the value is exact, `3.25e8` (a value that is not a whole
//! number, such as `1.5` or `1e-3`, is refused for an integer flag). Clap
//! names the flag in the error line (`invalid value '0' for '--d <D>'`).
//!
//! Human output groups digits in thousands: `115,201,469 hashes/s`.

/// Parses an unsigned integer: digits with optional `_` or `,` separators,
/// or an exact decimal/scientific form (`3.25e8`, `1e6`, `2.5E3`).
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t: String = s
        .trim()
        .chars()
        .filter(|c| *c != '_' && *c != ',')
        .collect();
    if t.is_empty() {
        return Err("expected a number".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map_err(|_| format!("{s} is too large (at most {})", group(u64::MAX)));
    }
    // Mantissa [digits][.digits] and an optional exponent, in integers.
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => {
            let e: i64 = t[i + 1..]
                .parse()
                .map_err(|_| format!("{s:?} is not a number"))?;
            (&t[..i], e)
        }
        None => (&t[..], 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{s:?} is not a whole number"));
    }
    let mut digits = format!("{int}{frac}");
    let mut exp = exp - frac.len() as i64;
    // Drop trailing zeros the exponent would remove anyway.
    while exp < 0 && digits.ends_with('0') {
        digits.pop();
        exp += 1;
    }
    if exp < 0 {
        return Err(format!("{s} is not a whole number"));
    }
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0);
    }
    let too_large = || format!("{s} is too large (at most {})", group(u64::MAX));
    let mut v: u64 = digits.parse().map_err(|_| too_large())?;
    for _ in 0..exp {
        v = v.checked_mul(10).ok_or_else(too_large)?;
    }
    Ok(v)
}

/// [`parse_u64`], at least 1.
pub fn parse_positive_u64(s: &str) -> Result<u64, String> {
    match parse_u64(s)? {
        0 => Err("must be at least 1".into()),
        v => Ok(v),
    }
}

/// [`parse_u64`] as a `usize`.
pub fn parse_usize(s: &str) -> Result<usize, String> {
    let v = parse_u64(s)?;
    usize::try_from(v).map_err(|_| format!("{s} is too large"))
}

/// [`parse_usize`], at least 1.
pub fn parse_positive_usize(s: &str) -> Result<usize, String> {
    match parse_usize(s)? {
        0 => Err("must be at least 1".into()),
        v => Ok(v),
    }
}

/// A finite real number; accepts `_` separators like the integers.
pub fn parse_f64(s: &str) -> Result<f64, String> {
    let t: String = s.trim().chars().filter(|c| *c != '_').collect();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("{s:?} is not a finite number")),
    }
}

/// [`parse_f64`], 0 or more (a duration in seconds).
pub fn parse_secs(s: &str) -> Result<f64, String> {
    match parse_f64(s)? {
        v if (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err("must be between 0 and 86,400 seconds".into()),
    }
}

/// [`parse_f64`], above 0.
pub fn parse_positive_f64(s: &str) -> Result<f64, String> {
    match parse_f64(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err("must be above 0".into()),
    }
}

/// `115201469` -> `115,201,469`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or count as a grouped integer (rounded): `115,201,469`.
pub fn group_f64(x: f64) -> String {
    if x.is_finite() && x >= 0.0 && x < u64::MAX as f64 {
        group(x.round() as u64)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_every_spelling() {
        for (s, v) in [
            ("0", 0),
            ("7", 7),
            ("325000000", 325_000_000),
            ("325_000_000", 325_000_000),
            ("325,000,000", 325_000_000),
            ("3.25e8", 325_000_000),
            ("3.25E8", 325_000_000),
            ("1e6", 1_000_000),
            ("1e0", 1),
            ("2.50e1", 25),
            ("0.5e1", 5),
            (".5e1", 5),
            ("5.", 5),
            ("1000e-3", 1),
            ("18446744073709551615", u64::MAX),
            (" 42 ", 42),
        ] {
            assert_eq!(parse_u64(s), Ok(v), "{s}");
        }
    }

    #[test]
    fn inexact_or_malformed_integers_are_refused() {
        for s in [
            "",
            "-1",
            "1.5",
            "3.255e2",
            "1e-3",
            "abc",
            "1e",
            "e5",
            ".",
            "1x",
            "0x10",
            "1e20",
            "18446744073709551616",
            "nan",
            "inf",
        ] {
            assert!(parse_u64(s).is_err(), "{s} parsed as {:?}", parse_u64(s));
        }
    }

    #[test]
    fn positive_variants_refuse_zero() {
        assert!(parse_positive_u64("0").unwrap_err().contains("at least 1"));
        assert!(parse_positive_u64("0e5").is_err());
        assert_eq!(parse_positive_u64("1_000"), Ok(1000));
        assert!(parse_positive_usize("0").is_err());
        assert_eq!(parse_usize("4_096"), Ok(4096));
    }

    #[test]
    fn reals() {
        assert_eq!(parse_f64("0.05"), Ok(0.05));
        assert_eq!(parse_f64("1_000.5"), Ok(1000.5));
        assert_eq!(parse_f64("3.25e8"), Ok(3.25e8));
        assert!(parse_f64("inf").is_err());
        assert!(parse_f64("NaN").is_err());
        assert!(parse_positive_f64("0").is_err());
        assert!(parse_positive_f64("-1").is_err());
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(115_201_469), "115,201,469");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(group_f64(115_201_468.6), "115,201,469");
    }
}
