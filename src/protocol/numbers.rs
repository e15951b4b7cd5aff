//! Number parsing with the leniency of OCaml's `Int64.of_string` and `float_of_string`, which
//! the reference switch applies to path segments (`/ack/Q/N`, `/trace/FROM/TIMEOUT`) and to the
//! Transfer `from` string.

/// Parses an `int64` as OCaml's `Int64.of_string` does: an optional sign, then decimal digits,
/// or a `0x`/`0o`/`0b`/`0u` prefix followed by digits of that base; `_` may separate digits.
/// Decimal values must fit in an `i64`; prefixed values may use the full 64 bits and wrap, as
/// in OCaml (`0xFFFFFFFFFFFFFFFF` is `-1`). Returns `None` for anything else.
pub fn parse_int64(text: &str) -> Option<i64> {
    parse_int64_bytes(text.as_bytes())
}

/// [`parse_int64`] of text given as bytes (a path segment, say), without checking first
/// that it is UTF-8: what it accepts is ASCII, and anything else is refused either way.
pub fn parse_int64_bytes(text: &[u8]) -> Option<i64> {
    let (negative, rest) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, digits, wraps) = match rest.get(..2) {
        Some(b"0x" | b"0X") => (16, &rest[2..], true),
        Some(b"0o" | b"0O") => (8, &rest[2..], true),
        Some(b"0b" | b"0B") => (2, &rest[2..], true),
        Some(b"0u" | b"0U") => (10, &rest[2..], true),
        _ => (10, rest, false),
    };
    if !digits.first()?.is_ascii_alphanumeric() {
        return None;
    }
    // Every id the clients send: at most 19 plain decimal digits (the switch's ids, which
    // count from the start time in ns, have 19), which cannot overflow a u64, read without
    // a check per digit and then checked once against the i64 range.
    if !wraps && digits.len() <= 19 {
        if let Some(magnitude) = plain_decimal(digits) {
            return if negative {
                (magnitude <= i64::MAX as u64 + 1).then(|| (magnitude as i64).wrapping_neg())
            } else {
                i64::try_from(magnitude).ok()
            };
        }
    }
    digits_of_radix(negative, radix, digits, wraps)
}

/// The value of at most 19 decimal digits (which cannot overflow), in one pass; `None` at the
/// first byte that is not a digit.
fn plain_decimal(digits: &[u8]) -> Option<u64> {
    let mut magnitude = 0u64;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        magnitude = magnitude * 10 + u64::from(digit);
    }
    Some(magnitude)
}

/// The digits of an `int64` after its sign and prefix, in any case [`parse_int64`] accepts.
fn digits_of_radix(negative: bool, radix: u32, digits: &[u8], wraps: bool) -> Option<i64> {
    let mut magnitude: u64 = 0;
    for &byte in digits {
        if byte == b'_' {
            continue;
        }
        // Decimal digits (every id the clients send) without the general conversion.
        let digit = match byte.wrapping_sub(b'0') {
            decimal if decimal < 10 && decimal < radix as u8 => u32::from(decimal),
            _ => (byte as char).to_digit(radix)?,
        };
        magnitude = magnitude
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    if wraps {
        let value = magnitude as i64;
        return Some(if negative {
            value.wrapping_neg()
        } else {
            value
        });
    }
    if negative {
        if magnitude <= i64::MAX as u64 + 1 {
            Some((magnitude as i64).wrapping_neg())
        } else {
            None
        }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Parses a float as OCaml's `float_of_string` does for decimal input: `5`, `5.`, `.5`, `1e3`,
/// `-2.5`, `nan`, `inf`, `infinity` (any case), with `_` allowed between digits.
/// Returns `None` for anything else (including empty input).
pub fn parse_float(text: &str) -> Option<f64> {
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    if cleaned.is_empty() || cleaned.starts_with('_') || text.starts_with('_') {
        return None;
    }
    let lower = cleaned.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    let word = matches!(unsigned, "nan" | "inf" | "infinity");
    let numeric = unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'+' | b'-'));
    if !(word || numeric) {
        return None;
    }
    lower.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::proptest_support::config(256))]

        /// The plain-decimal fast path reads every input as the general digit loop does.
        #[test]
        fn plain_decimals_read_as_the_general_way(
            sign in prop::sample::select(vec!["", "-", "+"]),
            // Around the 19 digits the fast path takes and the ends of the i64 range, with
            // and without separators or other bytes.
            digits in prop_oneof![
                "[0-9]{1,20}",
                "9[0-9]{17,19}",
                "922337203685477580[0-9]",
                "[0-9_]{1,21}",
                // Bytes next to the digits, which neither path may take for one.
                "[0-9][0-9/:a]{1,18}",
            ],
        ) {
            let text = format!("{sign}{digits}");
            let general = if digits.as_bytes()[0].is_ascii_alphanumeric() {
                digits_of_radix(sign == "-", 10, digits.as_bytes(), false)
            } else {
                None
            };
            prop_assert_eq!(parse_int64(&text), general);
        }
    }

    #[test]
    fn int64_like_ocaml() {
        assert_eq!(parse_int64("0"), Some(0));
        assert_eq!(parse_int64("-1"), Some(-1));
        assert_eq!(parse_int64("+7"), Some(7));
        assert_eq!(parse_int64("0x1F"), Some(31));
        assert_eq!(parse_int64("0o7"), Some(7));
        assert_eq!(parse_int64("0b101"), Some(5));
        assert_eq!(parse_int64("1_000"), Some(1000));
        assert_eq!(parse_int64("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int64("-9223372036854775808"), Some(i64::MIN));
        // One past either end, in 19 digits (the fast path's longest).
        assert_eq!(parse_int64("9223372036854775808"), None);
        assert_eq!(parse_int64("-9223372036854775809"), None);
        assert_eq!(parse_int64("9999999999999999999"), None);
        assert_eq!(parse_int64("0xFFFFFFFFFFFFFFFF"), Some(-1));
        assert_eq!(parse_int64(""), None);
        assert_eq!(parse_int64("-"), None);
        assert_eq!(parse_int64("_1"), None);
        assert_eq!(parse_int64("12a"), None);
        assert_eq!(parse_int64(" 1"), None);
        assert_eq!(parse_int64("0x"), None);
        // A decimal digit is a digit only below the base.
        assert_eq!(parse_int64("0b102"), None);
        assert_eq!(parse_int64("0o78"), None);
        assert_eq!(parse_int64("0x9f"), Some(159));
    }

    #[test]
    fn float_like_ocaml() {
        assert_eq!(parse_float("5"), Some(5.0));
        assert_eq!(parse_float("5."), Some(5.0));
        assert_eq!(parse_float("1e3"), Some(1000.0));
        assert_eq!(parse_float("-0.5"), Some(-0.5));
        assert!(parse_float("nan").unwrap().is_nan());
        assert_eq!(parse_float("inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("-infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float(""), None);
        assert_eq!(parse_float("abc"), None);
        assert_eq!(parse_float("1 "), None);
    }
}
