//! DynamoDB numbers: signed decimals of up to 38 significant digits whose magnitude is zero or
//! lies in [1E-130, 9.9999999999999999999999999999999999999E+125].
//!
//! Invariants: a `Number` is always normalized (the coefficient has no trailing zero digit, and
//! zero is `coefficient == 0, exponent == 0, negative == false`), so equal values have equal
//! representations and derived equality is numeric equality. Ordering is numeric, never via f64.

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, Result};

/// Most significant digits a number may carry.
pub const DIGITS_MAX: u32 = 38;
/// Smallest decimal exponent of a nonzero magnitude written as 0.d1d2... x 10^E (1E-130).
const SCALE_MIN: i32 = -129;
/// Largest such exponent (9.99...E+125 is 0.999... x 10^126).
const SCALE_MAX: i32 = 126;
// The order-preserving key encoding stores `scale - SCALE_MIN` in one byte.
const _: () = assert!(SCALE_MAX - SCALE_MIN == 255);

/// An exact decimal: `(-1)^negative * coefficient * 10^exponent`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Number {
    negative: bool,
    coefficient: u128,
    exponent: i32,
}

impl Number {
    /// Zero.
    pub const ZERO: Number = Number { negative: false, coefficient: 0, exponent: 0 };

    /// Parses DynamoDB's number syntax: optional sign, digits with an optional point, optional
    /// exponent (`-12.5e3`). Leading and trailing zeros do not count as significant digits.
    pub fn parse(text: &str) -> Result<Number> {
        let invalid = || Error::validation(format!("the parameter cannot be converted to a numeric value: {text:?}"));
        let bytes = text.as_bytes();
        let mut index = 0;
        let mut negative = false;
        if let Some(&sign) = bytes.first() {
            if sign == b'-' || sign == b'+' {
                negative = sign == b'-';
                index = 1;
            }
        }
        let mut digits: Vec<u8> = Vec::new();
        let mut fraction_digits: i64 = 0;
        let mut seen_point = false;
        let mut seen_digit = false;
        while index < bytes.len() {
            match bytes[index] {
                b'0'..=b'9' => {
                    seen_digit = true;
                    if !(digits.is_empty() && bytes[index] == b'0') {
                        digits.push(bytes[index] - b'0');
                    }
                    if seen_point {
                        fraction_digits += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                b'e' | b'E' => break,
                _ => return Err(invalid()),
            }
            index += 1;
        }
        if !seen_digit {
            return Err(invalid());
        }
        let mut exponent: i64 = 0;
        if index < bytes.len() {
            let rest = &text[index + 1..];
            let rest = rest.strip_prefix('+').unwrap_or(rest);
            if rest.is_empty() || rest.len() > 12 || !rest.trim_start_matches('-').bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            exponent = rest.parse::<i64>().map_err(|_| invalid())?;
        }
        // digits now holds the significant digits from the first nonzero one on; the value is
        // digits x 10^(exponent - fraction_digits).
        let mut exponent = exponent - fraction_digits;
        while digits.last() == Some(&0) {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Ok(Number::ZERO);
        }
        if digits.len() > DIGITS_MAX as usize {
            return Err(Error::validation("attempting to store more than 38 significant digits in a Number"));
        }
        let coefficient = digits.iter().fold(0u128, |acc, &d| acc * 10 + u128::from(d));
        Number::from_parts(negative, coefficient, exponent)
    }

    /// Builds a number from a coefficient and exponent, normalizing and range-checking it.
    pub fn from_parts(negative: bool, mut coefficient: u128, exponent: i64) -> Result<Number> {
        if coefficient == 0 {
            return Ok(Number::ZERO);
        }
        let mut exponent = exponent;
        while coefficient.is_multiple_of(10) {
            coefficient /= 10;
            exponent += 1;
        }
        let digits = digit_count(coefficient);
        if digits > DIGITS_MAX {
            return Err(Error::validation("attempting to store more than 38 significant digits in a Number"));
        }
        let scale = exponent + i64::from(digits);
        if scale > i64::from(SCALE_MAX) {
            return Err(Error::validation(
                "number overflow: attempting to store a number with magnitude larger than supported range",
            ));
        }
        if scale < i64::from(SCALE_MIN) {
            return Err(Error::validation(
                "number underflow: attempting to store a number with magnitude smaller than supported range",
            ));
        }
        Ok(Number { negative, coefficient, exponent: exponent as i32 })
    }

    /// The exact sum, or a `ValidationException` if it needs more than 38 significant digits or
    /// leaves the supported range (DynamoDB's rules for `+` and ADD).
    pub fn checked_add(&self, other: &Number) -> Result<Number> {
        if other.is_zero() {
            return Ok(*self);
        }
        if self.is_zero() {
            return Ok(*other);
        }
        // Align both on the smaller exponent. If one coefficient cannot be scaled within u128,
        // the exact sum has more than 38 digits: the scaled one ends in zeros, the other (being
        // normalized) does not, so no cancellation can bring the result back under 10^38.
        let exponent = self.exponent.min(other.exponent);
        let too_precise = || Error::validation("attempting to store more than 38 significant digits in a Number");
        let scaled = |number: &Number| {
            10u128
                .checked_pow((number.exponent - exponent) as u32)
                .and_then(|scale| number.coefficient.checked_mul(scale))
        };
        let (left, right) = (scaled(self).ok_or_else(too_precise)?, scaled(other).ok_or_else(too_precise)?);
        let (negative, coefficient) = if self.negative == other.negative {
            (self.negative, left.checked_add(right).ok_or_else(too_precise)?)
        } else if left >= right {
            (self.negative, left - right)
        } else {
            (other.negative, right - left)
        };
        Number::from_parts(negative, coefficient, i64::from(exponent))
    }

    /// The exact difference `self - other` (see `checked_add`).
    pub fn checked_sub(&self, other: &Number) -> Result<Number> {
        self.checked_add(&other.negated())
    }

    /// The number with its sign flipped (zero stays zero).
    pub fn negated(&self) -> Number {
        Number { negative: !self.negative && !self.is_zero(), ..*self }
    }

    /// Whether the number is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// Whether the number is zero.
    pub fn is_zero(&self) -> bool {
        self.coefficient == 0
    }

    /// Count of significant digits (zero has none).
    pub fn significant_digits(&self) -> u32 {
        if self.coefficient == 0 {
            0
        } else {
            digit_count(self.coefficient)
        }
    }

    /// The value's decimal scale: the exponent E with magnitude = 0.d1d2... x 10^E.
    fn scale(&self) -> i32 {
        self.exponent + digit_count(self.coefficient) as i32
    }

    /// The coefficient's digits, most significant first.
    fn digits(&self) -> Vec<u8> {
        self.coefficient.to_string().into_bytes().iter().map(|b| b - b'0').collect()
    }

    /// Size as DynamoDB counts it: one byte per two significant digits, plus one.
    pub fn size(&self) -> usize {
        (self.significant_digits() as usize).div_ceil(2) + 1
    }

    /// Appends the order-preserving encoding: byte comparison of two encodings equals numeric
    /// comparison of the numbers, and the encoding is self-delimiting (FORMAT.md, "Numbers").
    pub fn encode_ordered(&self, out: &mut Vec<u8>) {
        if self.coefficient == 0 {
            out.push(0x80);
            return;
        }
        let scale_byte = (self.scale() - SCALE_MIN) as u8;
        if self.negative {
            out.push(0x40);
            out.push(!scale_byte);
            out.extend(self.digits().iter().map(|d| !(d + 1)));
            out.push(0xFF);
        } else {
            out.push(0xC0);
            out.push(scale_byte);
            out.extend(self.digits().iter().map(|d| d + 1));
            out.push(0x00);
        }
    }

    /// Decodes `encode_ordered` output from the front of `bytes`; returns the number and the
    /// count of bytes it used, or a reason why the bytes are not a number.
    pub fn decode_ordered(bytes: &[u8]) -> Result<(Number, usize), &'static str> {
        let (&class, rest) = bytes.split_first().ok_or("empty number")?;
        let negative = match class {
            0x80 => return Ok((Number::ZERO, 1)),
            0x40 => true,
            0xC0 => false,
            _ => return Err("unknown number class byte"),
        };
        let (&scale_byte, rest) = rest.split_first().ok_or("truncated number")?;
        let scale_byte = if negative { !scale_byte } else { scale_byte };
        let mut coefficient: u128 = 0;
        let terminator = if negative { 0xFF } else { 0x00 };
        for (digits, &byte) in (0u32..).zip(rest) {
            if byte == terminator {
                if digits == 0 {
                    return Err("number without digits");
                }
                let scale = i32::from(scale_byte) + SCALE_MIN;
                let number = Number::from_parts(negative, coefficient, i64::from(scale) - i64::from(digits))
                    .map_err(|_| "number out of range")?;
                if number.significant_digits() != digits {
                    return Err("number with trailing zero digits");
                }
                return Ok((number, 2 + digits as usize + 1));
            }
            let digit = if negative { !byte } else { byte }.wrapping_sub(1);
            if digit > 9 || digits == DIGITS_MAX {
                return Err("bad number digit");
            }
            coefficient = coefficient * 10 + u128::from(digit);
        }
        Err("truncated number")
    }
}

fn digit_count(mut value: u128) -> u32 {
    let mut count = 1;
    while value >= 10 {
        value /= 10;
        count += 1;
    }
    count
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        let sign = |n: &Number| -> i8 {
            if n.coefficient == 0 {
                0
            } else if n.negative {
                -1
            } else {
                1
            }
        };
        let by_sign = sign(self).cmp(&sign(other));
        if by_sign != Ordering::Equal || sign(self) == 0 {
            return by_sign;
        }
        let magnitude = self.scale().cmp(&other.scale()).then_with(|| self.digits().cmp(&other.digits()));
        if self.negative {
            magnitude.reverse()
        } else {
            magnitude
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Plain decimal notation without exponent and without trailing zeros, as DynamoDB returns it.
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.coefficient == 0 {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        let digits = self.coefficient.to_string();
        if self.exponent >= 0 {
            f.write_str(&digits)?;
            for _ in 0..self.exponent {
                f.write_str("0")?;
            }
            return Ok(());
        }
        let fraction = (-self.exponent) as usize;
        if fraction >= digits.len() {
            f.write_str("0.")?;
            for _ in 0..fraction - digits.len() {
                f.write_str("0")?;
            }
            f.write_str(&digits)
        } else {
            let (whole, part) = digits.split_at(digits.len() - fraction);
            write!(f, "{whole}.{part}")
        }
    }
}

impl fmt::Debug for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "N({self})")
    }
}

impl std::str::FromStr for Number {
    type Err = Error;
    fn from_str(text: &str) -> Result<Number> {
        Number::parse(text)
    }
}

impl From<i64> for Number {
    fn from(value: i64) -> Number {
        Number::from_parts(value < 0, u128::from(value.unsigned_abs()), 0).expect("every i64 is in range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str) -> Number {
        Number::parse(text).unwrap()
    }

    #[test]
    fn sums_are_exact_or_refused() {
        let sum = |a: &str, b: &str| n(a).checked_add(&n(b)).map(|sum| sum.to_string());
        assert_eq!(sum("1", "2").unwrap(), "3");
        assert_eq!(sum("0.1", "0.2").unwrap(), "0.3");
        assert_eq!(sum("-5", "3").unwrap(), "-2");
        assert_eq!(sum("5", "-5").unwrap(), "0");
        assert_eq!(sum("1E-130", "-1E-130").unwrap(), "0");
        assert_eq!(
            sum("99999999999999999999999999999999999999", "1").unwrap(),
            "100000000000000000000000000000000000000"
        );
        assert_eq!(
            sum("12345678901234567890123456789012345678", "0").unwrap(),
            "12345678901234567890123456789012345678"
        );
        assert!(sum("12345678901234567890123456789012345678", "0.1").is_err(), "39 digits");
        assert!(sum("1E100", "1E-100").is_err(), "201 digits");
        assert!(sum("9.9999999999999999999999999999999999999E+125", "1E+88").is_err(), "overflow");
        assert_eq!(n("7").checked_sub(&n("10")).unwrap().to_string(), "-3");
        assert_eq!(n("0").negated(), n("0"));
    }

    proptest::proptest! {
        #[test]
        fn sums_match_i128_arithmetic(a in -(10i64.pow(17))..10i64.pow(17), b in -(10i64.pow(17))..10i64.pow(17), scale in 0u32..20) {
            // a / 10^scale + b: exact in i128 once both are scaled by 10^scale.
            let left = Number::from_parts(a < 0, u128::from(a.unsigned_abs()), -i64::from(scale)).unwrap();
            let right = Number::from(b);
            let expected = i128::from(a) + i128::from(b) * 10i128.pow(scale);
            let expected = Number::from_parts(expected < 0, expected.unsigned_abs(), -i64::from(scale)).unwrap();
            proptest::prop_assert_eq!(left.checked_add(&right).unwrap(), expected);
            proptest::prop_assert_eq!(expected.checked_sub(&right).unwrap(), left);
        }
    }

    #[test]
    fn parse_and_format_canonical() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("0.000", "0"),
            ("1.50", "1.5"),
            ("+001.500e1", "15"),
            ("1e2", "100"),
            ("-12.5E-3", "-0.0125"),
            ("123456789012345678901234567890.12345678", "123456789012345678901234567890.12345678"),
        ];
        for (input, canonical) in cases {
            assert_eq!(n(input).to_string(), canonical, "input {input}");
            assert_eq!(n(canonical), n(input));
        }
        let tiny = format!("0.{}1", "0".repeat(129));
        assert_eq!(n("1E-130").to_string(), tiny);
        assert_eq!(n(&tiny), n("1e-130"));
    }

    #[test]
    fn rejects_bad_text_and_range() {
        for bad in ["", "-", ".", "1..2", "1e", "abc", "1e+", "--1", "1 ", "0x10", "1e5.5"] {
            assert!(matches!(Number::parse(bad), Err(Error::Validation(_))), "{bad:?}");
        }
        assert!(Number::parse("1E-131").is_err());
        assert!(Number::parse("1E+126").is_err());
        assert!(Number::parse("9.9999999999999999999999999999999999999E+125").is_ok());
        assert!(Number::parse("1234567890123456789012345678901234567890").is_err());
        // Trailing zeros are not significant, so 40 digits ending in zeros is fine.
        assert!(Number::parse("1234567890123456789012345678901234567800").is_ok());
        assert!(Number::parse("1e999999999999999").is_err());
    }

    #[test]
    fn numeric_order_and_encoding_order_agree() {
        let sorted = [
            "-1e125",
            "-100",
            "-99.5",
            "-1",
            "-0.5",
            "-1e-130",
            "0",
            "1e-130",
            "0.5",
            "1",
            "1.05",
            "1.5",
            "99.5",
            "100",
            "9.9999999999999999999999999999999999999E+125",
        ];
        for pair in sorted.windows(2) {
            let (a, b) = (n(pair[0]), n(pair[1]));
            assert!(a < b, "{a} < {b}");
            let (mut ea, mut eb) = (Vec::new(), Vec::new());
            a.encode_ordered(&mut ea);
            b.encode_ordered(&mut eb);
            assert!(ea < eb, "encoding of {a} < {b}");
            assert_eq!(Number::decode_ordered(&ea).unwrap(), (a, ea.len()));
        }
    }

    #[test]
    fn size_counts_significant_digits() {
        assert_eq!(n("0").size(), 1);
        assert_eq!(n("7").size(), 2);
        assert_eq!(n("12").size(), 2);
        assert_eq!(n("123").size(), 3);
        assert_eq!(n("1000").size(), 2);
        assert_eq!(n("0.001").size(), 2);
    }
}
