//! Typed column values, from PostgreSQL's text output format and the Relation's type OIDs.
//!
//! Exactness first: `numeric` becomes a `rust_decimal::Decimal` when it fits and otherwise stays
//! exact as text (Odoo numerics are unbounded; NaN and ±Infinity are text too); jsonb keeps
//! arbitrary-precision numbers; float8 keeps NaN and ±Infinity. SQL NULL and an unchanged TOASTed
//! value are distinct. Types without a mapping keep their text with their OID.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use rust_decimal::Decimal;

use crate::pgoutput::Column;

/// Type OIDs this module maps.
pub mod oid {
    #![allow(missing_docs)]
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// The element type of an array type OID.
pub fn array_element(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        1000 => oid::BOOL,
        1001 => oid::BYTEA,
        1003 => oid::NAME,
        1005 => oid::INT2,
        1007 => oid::INT4,
        1009 => oid::TEXT,
        1014 => oid::BPCHAR,
        1015 => oid::VARCHAR,
        1016 => oid::INT8,
        1021 => oid::FLOAT4,
        1022 => oid::FLOAT8,
        1028 => oid::OID,
        1115 => oid::TIMESTAMP,
        1182 => oid::DATE,
        1185 => oid::TIMESTAMPTZ,
        1231 => oid::NUMERIC,
        199 => oid::JSON,
        2951 => oid::UUID,
        3807 => oid::JSONB,
        _ => return None,
    })
}

/// A value that may be ±infinity (dates and timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Infinite<T> {
    /// A finite value.
    Value(T),
    /// `infinity`.
    PosInfinity,
    /// `-infinity`.
    NegInfinity,
}

/// An exact numeric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Numeric {
    /// Fits `rust_decimal` exactly.
    Decimal(Decimal),
    /// Does not fit (too many digits), or NaN / ±Infinity: PostgreSQL's exact text.
    Text(String),
}

/// A typed column value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A TOASTed value the change left untouched; the server did not send it.
    UnchangedToast,
    /// bool.
    Bool(bool),
    /// int2, int4, int8, oid.
    Int(i64),
    /// float4, float8 (NaN and ±Infinity included).
    Float(f64),
    /// numeric.
    Numeric(Numeric),
    /// text, varchar, bpchar, name.
    Text(String),
    /// json, jsonb.
    Json(serde_json::Value),
    /// date.
    Date(Infinite<NaiveDate>),
    /// timestamp without time zone (Odoo's Datetime: naive UTC).
    Timestamp(Infinite<NaiveDateTime>),
    /// timestamp with time zone.
    TimestampTz(Infinite<DateTime<Utc>>),
    /// bytea.
    Bytea(Vec<u8>),
    /// uuid.
    Uuid(uuid::Uuid),
    /// One-dimensional or nested array.
    Array(Vec<Value>),
    /// A type without a mapping: its text and OID.
    Other {
        /// Type OID.
        type_oid: u32,
        /// Text output.
        text: String,
    },
}

/// A value whose text does not match its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {type_name} value {text:?}")]
pub struct ValueError {
    /// The type.
    pub type_name: &'static str,
    /// The offending text (truncated).
    pub text: String,
}

fn err(type_name: &'static str, text: &str) -> ValueError {
    ValueError {
        type_name,
        text: text.chars().take(64).collect(),
    }
}

/// Decodes one column as sent by pgoutput (text format).
pub fn decode_column(col: &Column<'_>, type_oid: u32) -> Result<Value, ValueError> {
    match col {
        Column::Null => Ok(Value::Null),
        Column::UnchangedToast => Ok(Value::UnchangedToast),
        Column::Text(b) => {
            let s = std::str::from_utf8(b).map_err(|_| err("utf-8 text", ""))?;
            decode_text(s, type_oid)
        }
        Column::Binary(b) => Ok(Value::Bytea(b.to_vec())),
    }
}

/// Decodes PostgreSQL's text output of a value of type `type_oid`.
pub fn decode_text(s: &str, type_oid: u32) -> Result<Value, ValueError> {
    if let Some(elem) = array_element(type_oid) {
        return parse_array(s, elem);
    }
    Ok(match type_oid {
        oid::BOOL => match s {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => return Err(err("bool", s)),
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            Value::Int(s.parse().map_err(|_| err("integer", s))?)
        }
        oid::FLOAT4 | oid::FLOAT8 => Value::Float(s.parse().map_err(|_| err("float", s))?),
        oid::NUMERIC => Value::Numeric(parse_numeric(s)?),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => Value::Text(s.to_string()),
        oid::JSON | oid::JSONB => Value::Json(serde_json::from_str(s).map_err(|_| err("json", s))?),
        oid::DATE => Value::Date(infinite(s, |v| {
            parse_date(v).ok_or_else(|| err("date", s))
        })?),
        oid::TIMESTAMP => Value::Timestamp(infinite(s, |v| {
            parse_timestamp(v).ok_or_else(|| err("timestamp", s))
        })?),
        oid::TIMESTAMPTZ => Value::TimestampTz(infinite(s, |v| {
            parse_timestamptz(v).ok_or_else(|| err("timestamptz", s))
        })?),
        oid::BYTEA => Value::Bytea(parse_bytea(s)?),
        oid::UUID => Value::Uuid(uuid::Uuid::parse_str(s).map_err(|_| err("uuid", s))?),
        other => Value::Other {
            type_oid: other,
            text: s.to_string(),
        },
    })
}

/// numeric: a Decimal when it fits exactly, else PostgreSQL's text.
pub fn parse_numeric(s: &str) -> Result<Numeric, ValueError> {
    match s {
        "NaN" | "Infinity" | "-Infinity" => return Ok(Numeric::Text(s.to_string())),
        _ => {}
    }
    let body = s.strip_prefix('-').unwrap_or(s);
    let valid = !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && body.bytes().filter(|&b| b == b'.').count() <= 1
        && body.bytes().any(|b| b.is_ascii_digit());
    if !valid {
        return Err(err("numeric", s));
    }
    Ok(match Decimal::from_str_exact(s) {
        Ok(d) => Numeric::Decimal(d),
        Err(_) => Numeric::Text(s.to_string()),
    })
}

fn infinite<T>(
    s: &str,
    f: impl FnOnce(&str) -> Result<T, ValueError>,
) -> Result<Infinite<T>, ValueError> {
    Ok(match s {
        "infinity" => Infinite::PosInfinity,
        "-infinity" => Infinite::NegInfinity,
        v => Infinite::Value(f(v)?),
    })
}

/// Parses a date or timestamp that may carry PostgreSQL's ` BC` suffix: year N BC is chrono's
/// proleptic year 1 - N.
fn parse_era<T: chrono::Datelike>(s: &str, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    match s.strip_suffix(" BC") {
        Some(v) => {
            let t = parse(v)?;
            t.with_year(1 - t.year())
        }
        None => parse(s),
    }
}

/// `YYYY-MM-DD` or `YYYY-MM-DD BC`.
fn parse_date(s: &str) -> Option<NaiveDate> {
    parse_era(s, |v| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff]`, optionally ` BC`.
fn parse_timestamp(s: &str) -> Option<NaiveDateTime> {
    parse_era(s, |v| {
        NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f").ok()
    })
}

/// `2026-11-29 18:00:00.5+02`, `+05:30`, `+05:30:15`.
fn parse_timestamptz(s: &str) -> Option<DateTime<Utc>> {
    let pos = s.rfind(['+', '-'])?;
    let (local, offset) = s.split_at(pos);
    let t = parse_timestamp(local)?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].split(':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next().map_or(Some(0), |v| v.parse().ok())?;
    let sec: i64 = parts.next().map_or(Some(0), |v| v.parse().ok())?;
    if !(0..=24).contains(&h) || !(0..60).contains(&m) || !(0..60).contains(&sec) {
        return None;
    }
    let off = chrono::TimeDelta::try_seconds(sign * (h * 3600 + m * 60 + sec))?;
    Some(t.checked_sub_signed(off)?.and_utc())
}

fn parse_bytea(s: &str) -> Result<Vec<u8>, ValueError> {
    if let Some(hex) = s.strip_prefix("\\x") {
        if hex.len() % 2 != 0 {
            return Err(err("bytea", s));
        }
        let digit = |c: u8| (c as char).to_digit(16).ok_or_else(|| err("bytea", s));
        return hex
            .as_bytes()
            .chunks_exact(2)
            .map(|p| Ok((digit(p[0])? * 16 + digit(p[1])?) as u8))
            .collect();
    }
    // escape format: `\\` and `\ooo`
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
        } else if b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let oct = b.get(i + 1..i + 4).ok_or_else(|| err("bytea", s))?;
            let mut v: u32 = 0;
            for &c in oct {
                v = v * 8 + (c as char).to_digit(8).ok_or_else(|| err("bytea", s))?;
            }
            out.push(u8::try_from(v).map_err(|_| err("bytea", s))?);
            i += 4;
        }
    }
    Ok(out)
}

/// Array text output: `{1,2,NULL}`, `{"a b","c,d"}`, `{{1,2},{3,4}}`, `[0:1]={1,2}`.
fn parse_array(s: &str, elem: u32) -> Result<Value, ValueError> {
    let body = match s.find("={") {
        Some(i) if s.starts_with('[') => &s[i + 1..],
        _ => s,
    };
    let mut p = ArrayParser {
        s: body.as_bytes(),
        pos: 0,
        elem,
        text: s,
    };
    let v = p.array()?;
    if p.pos != p.s.len() {
        return Err(err("array", s));
    }
    Ok(v)
}

struct ArrayParser<'a> {
    s: &'a [u8],
    pos: usize,
    elem: u32,
    text: &'a str,
}

impl ArrayParser<'_> {
    fn fail(&self) -> ValueError {
        err("array", self.text)
    }

    fn array(&mut self) -> Result<Value, ValueError> {
        if self.s.get(self.pos) != Some(&b'{') {
            return Err(self.fail());
        }
        self.pos += 1;
        let mut items = Vec::new();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            let item = match self.s.get(self.pos) {
                Some(b'{') => self.array()?,
                Some(b'"') => {
                    self.pos += 1;
                    let mut buf = Vec::new();
                    loop {
                        match self.s.get(self.pos) {
                            Some(b'\\') => {
                                buf.push(*self.s.get(self.pos + 1).ok_or_else(|| self.fail())?);
                                self.pos += 2;
                            }
                            Some(b'"') => {
                                self.pos += 1;
                                break;
                            }
                            Some(&c) => {
                                buf.push(c);
                                self.pos += 1;
                            }
                            None => return Err(self.fail()),
                        }
                    }
                    let t = String::from_utf8(buf).map_err(|_| self.fail())?;
                    decode_text(&t, self.elem)?
                }
                Some(_) => {
                    let start = self.pos;
                    while let Some(&c) = self.s.get(self.pos) {
                        if c == b',' || c == b'}' {
                            break;
                        }
                        self.pos += 1;
                    }
                    let t =
                        std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.fail())?;
                    if t.eq_ignore_ascii_case("NULL") {
                        Value::Null
                    } else {
                        decode_text(t, self.elem)?
                    }
                }
                None => return Err(self.fail()),
            };
            items.push(item);
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.fail()),
            }
        }
    }
}

impl FromStr for Numeric {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_numeric(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerics_stay_exact() {
        assert_eq!(
            parse_numeric("12345678.1234").unwrap(),
            Numeric::Decimal(Decimal::from_str_exact("12345678.1234").unwrap())
        );
        let huge = "123456789012345678901234567890.123456789012345678901234567890";
        assert_eq!(parse_numeric(huge).unwrap(), Numeric::Text(huge.into()));
        assert_eq!(parse_numeric("NaN").unwrap(), Numeric::Text("NaN".into()));
        assert_eq!(
            parse_numeric("-0.000000000000000000000000000000000001").unwrap(),
            Numeric::Text("-0.000000000000000000000000000000000001".into())
        );
        assert!(parse_numeric("1e5").is_err());
        assert!(parse_numeric("").is_err());
        assert!(parse_numeric("1.2.3").is_err());
    }

    #[test]
    fn scalars_from_postgres_text_output() {
        assert_eq!(decode_text("t", oid::BOOL).unwrap(), Value::Bool(true));
        assert_eq!(
            decode_text("-9223372036854775808", oid::INT8).unwrap(),
            Value::Int(i64::MIN)
        );
        assert!(matches!(decode_text("NaN", oid::FLOAT8).unwrap(), Value::Float(f) if f.is_nan()));
        assert_eq!(
            decode_text("-Infinity", oid::FLOAT8).unwrap(),
            Value::Float(f64::NEG_INFINITY)
        );
        assert_eq!(
            decode_text("\\x00ff10", oid::BYTEA).unwrap(),
            Value::Bytea(vec![0, 255, 16])
        );
        assert_eq!(
            decode_text("a\\\\b\\001", oid::BYTEA).unwrap(),
            Value::Bytea(b"a\\b\x01".to_vec())
        );
        assert_eq!(
            decode_text("infinity", oid::DATE).unwrap(),
            Value::Date(Infinite::PosInfinity)
        );
        assert_eq!(
            decode_text("2026-11-29 18:00:00.5+02", oid::TIMESTAMPTZ).unwrap(),
            Value::TimestampTz(Infinite::Value(
                DateTime::parse_from_rfc3339("2026-11-29T16:00:00.5Z")
                    .unwrap()
                    .to_utc()
            ))
        );
        assert_eq!(
            decode_text("2026-11-29 18:00:00.123456", oid::TIMESTAMP).unwrap(),
            Value::Timestamp(Infinite::Value(
                NaiveDateTime::parse_from_str("2026-11-29 18:00:00.123456", "%Y-%m-%d %H:%M:%S%.f")
                    .unwrap()
            ))
        );
        let Value::Json(j) = decode_text(r#"{"en_US": "Desk", "n": 1.50}"#, oid::JSONB).unwrap()
        else {
            panic!("not json")
        };
        assert_eq!(j["en_US"], "Desk");
        assert_eq!(j["n"].to_string(), "1.50", "json numbers keep their digits");
        assert_eq!(
            decode_text("x", 99999).unwrap(),
            Value::Other {
                type_oid: 99999,
                text: "x".into()
            }
        );
        assert_eq!(
            decode_text("0044-03-15 BC", oid::DATE).unwrap(),
            Value::Date(Infinite::Value(
                NaiveDate::from_ymd_opt(-43, 3, 15).unwrap()
            ))
        );
        assert_eq!(
            decode_text("0001-01-01 12:00:00 BC", oid::TIMESTAMP).unwrap(),
            Value::Timestamp(Infinite::Value(
                NaiveDate::from_ymd_opt(0, 1, 1)
                    .unwrap()
                    .and_hms_opt(12, 0, 0)
                    .unwrap()
            ))
        );
        assert!(decode_text("maybe", oid::BOOL).is_err());
        assert!(decode_text("12x", oid::INT4).is_err());
    }

    #[test]
    fn arrays_with_quotes_nulls_and_nesting() {
        assert_eq!(
            decode_text(r#"{"a b","c,d",NULL,"e\"f"}"#, 1009).unwrap(),
            Value::Array(vec![
                Value::Text("a b".into()),
                Value::Text("c,d".into()),
                Value::Null,
                Value::Text("e\"f".into())
            ])
        );
        assert_eq!(
            decode_text("{{1,2},{3,NULL}}", 1007).unwrap(),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Null])
            ])
        );
        assert_eq!(
            decode_text("[0:1]={7,8}", 1007).unwrap(),
            Value::Array(vec![Value::Int(7), Value::Int(8)])
        );
        assert_eq!(decode_text("{}", 1231).unwrap(), Value::Array(vec![]));
        assert!(decode_text("{1,2", 1007).is_err());
        // found by the fuzzer: multi-byte characters where hex digits belong
        assert!(decode_text("\\xé0", oid::BYTEA).is_err());
        assert!(decode_text("\\é", oid::BYTEA).is_err());
        assert!(decode_text("2026-01-01 00:00:00+99999999999999", oid::TIMESTAMPTZ).is_err());
    }

    #[test]
    fn null_and_unchanged_toast_are_distinct() {
        assert_eq!(
            decode_column(&Column::Null, oid::TEXT).unwrap(),
            Value::Null
        );
        assert_eq!(
            decode_column(&Column::UnchangedToast, oid::TEXT).unwrap(),
            Value::UnchangedToast
        );
        assert_eq!(
            decode_column(&Column::Text(b""), oid::TEXT).unwrap(),
            Value::Text(String::new())
        );
    }
}
