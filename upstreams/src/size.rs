//! Sizes in the config (`max_blob_size: 64GiB`) and in messages (`1.5 MiB`).

use serde::Deserializer;
use serde::de::{self, Visitor};
use std::fmt;

/// A size in bytes: a number (`1073741824`), a number with a unit (`512MiB`, `1.5 GB`: `B`,
/// `KB`/`MB`/`GB`/`TB` in powers of 1000, `KiB`/`MiB`/`GiB`/`TiB` in powers of 1024, case
/// ignored), or `unlimited` (`None`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct SizeVisitor;

    impl Visitor<'_> for SizeVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a size such as 64GiB or 500MB, a number of bytes, or unlimited")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<u64>, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<u64>, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("{v} is negative")))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<u64>, E> {
            parse(v).map_err(|reason| E::custom(format!("{v:?} is not a size: {reason}")))
        }
    }

    d.deserialize_any(SizeVisitor)
}

/// See [`deserialize`].
pub fn parse(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| "expected a number, then a unit".to_string())?;
    let unit = unit.trim().to_ascii_lowercase();
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}")),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err("too large".to_string());
    }
    Ok(Some(bytes.round() as u64))
}

/// A size as people read it: `64 GiB`, `1.5 MiB`, `100 bytes`.
pub fn show(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    let shown = format!("{value:.1}");
    format!("{} {unit}", shown.trim_end_matches(".0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bytes_units_and_unlimited() {
        assert_eq!(parse("1048576"), Ok(Some(1 << 20)));
        assert_eq!(parse("512MiB"), Ok(Some(512 << 20)));
        assert_eq!(parse("1.5 GB"), Ok(Some(1_500_000_000)));
        assert_eq!(parse("2tib"), Ok(Some(2 << 40)));
        assert_eq!(parse("Unlimited"), Ok(None));
        for bad in ["", "abc", "3x", "MiB", "1..2k", "99999999999 TiB"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_show_in_binary_units() {
        assert_eq!(show(100), "100 bytes");
        assert_eq!(show(1 << 30), "1 GiB");
        assert_eq!(show(64 << 30), "64 GiB");
        assert_eq!(show(3 << 19), "1.5 MiB");
        assert_eq!(show(2 << 40), "2 TiB");
    }
}
