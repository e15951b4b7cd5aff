//! A byte-oriented JSON reader and writer that behave like Yojson, the JSON library of the
//! original OCaml switch and its clients.
//!
//! Why not `serde_json`: payloads and queue names are arbitrary bytes, and Yojson copies every
//! byte ≥ 0x80 raw (valid UTF-8 or not) when it prints a string, and accepts raw invalid UTF-8
//! and raw control bytes when it reads one. `serde_json` would reject or mangle such strings.
//! The reader also accepts Yojson's extensions (`//` and `/* */` comments, `NaN`, `Infinity`,
//! `-Infinity`) and keeps integers that overflow `i64` as [`Value::IntLiteral`], so that callers
//! can report them the way the reference does.

use std::fmt::Write as _;

use super::byte_search::{bytes_below, bytes_equal};

/// Nesting deeper than this is refused, so that hostile input cannot exhaust the stack.
pub const JSON_DEPTH_MAX: usize = 128;

/// A parsed JSON document. Strings are raw bytes (escapes decoded to UTF-8).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer literal that fits in an `i64`.
    Int(i64),
    /// An integer literal too large for an `i64`, kept as text (Yojson's `Intlit`).
    IntLiteral(String),
    /// A number with a fraction or exponent, or `NaN` / `Infinity` / `-Infinity`.
    Float(f64),
    /// A string, as the bytes it denotes.
    String(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// An object, with its members in document order (duplicates kept).
    Object(Vec<(Vec<u8>, Value)>),
}

/// Why a document could not be parsed. The offset is in bytes from the start of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The input was empty or held only white space and comments.
    #[error("blank input data")]
    Blank,
    /// A syntax error at the given byte offset.
    #[error("invalid JSON at byte {offset}: {what}")]
    Syntax {
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected or found.
        what: &'static str,
    },
}

impl Value {
    /// Looks up an object member the way rpclib does for records: keys are compared
    /// ASCII-case-insensitively and, for duplicate keys, the last one wins. Returns `None` for a
    /// missing key or when `self` is not an object.
    pub fn member(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(key.as_bytes()))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The elements of an array, or `None` for any other value.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    /// The bytes of a string, or `None` for any other value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::String(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// An `int64` as rpclib reads it: an integer, or a string that OCaml's `Int64.of_string`
    /// accepts.
    pub fn as_int64(&self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(*n),
            Value::String(text) => std::str::from_utf8(text)
                .ok()
                .and_then(super::numbers::parse_int64),
            _ => None,
        }
    }

    /// A `float` as rpclib reads it: a float, an integer (converted), or a numeric string.
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(n) => Some(*n as f64),
            Value::IntLiteral(text) => text.parse().ok(),
            Value::String(text) => std::str::from_utf8(text)
                .ok()
                .and_then(super::numbers::parse_float),
            _ => None,
        }
    }
}

/// Parses one JSON document, with Yojson's leniency (comments, `NaN`, `Infinity`, raw bytes in
/// strings) and strictness (no trailing commas, no single quotes, no trailing junk).
pub fn parse(input: &[u8]) -> Result<Value, JsonError> {
    let mut reader = Reader { input, pos: 0 };
    reader.skip_blank()?;
    if reader.pos == input.len() {
        return Err(JsonError::Blank);
    }
    let value = reader.value(0)?;
    reader.skip_blank()?;
    if reader.pos != input.len() {
        return Err(reader.error("trailing data after the document"));
    }
    Ok(value)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn error(&self, what: &'static str) -> JsonError {
        JsonError::Syntax {
            offset: self.pos,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn skip_blank(&mut self) -> Result<(), JsonError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') => match self.input.get(self.pos + 1) {
                    Some(b'/') => {
                        while let Some(byte) = self.peek() {
                            self.pos += 1;
                            if byte == b'\n' {
                                break;
                            }
                        }
                    }
                    Some(b'*') => {
                        let start = self.pos;
                        self.pos += 2;
                        loop {
                            if self.pos + 1 >= self.input.len() {
                                self.pos = start;
                                return Err(self.error("unterminated comment"));
                            }
                            if &self.input[self.pos..self.pos + 2] == b"*/" {
                                self.pos += 2;
                                break;
                            }
                            self.pos += 1;
                        }
                    }
                    _ => return Err(self.error("unexpected '/'")),
                },
                _ => return Ok(()),
            }
        }
    }

    fn eat_word(&mut self, word: &[u8]) -> bool {
        if self.input[self.pos..].starts_with(word) {
            self.pos += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > JSON_DEPTH_MAX {
            return Err(self.error("nesting too deep"));
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::String),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'N') if self.eat_word(b"NaN") => Ok(Value::Float(f64::NAN)),
            Some(b'I') if self.eat_word(b"Infinity") => Ok(Value::Float(f64::INFINITY)),
            Some(b'n') if self.eat_word(b"null") => Ok(Value::Null),
            Some(b't') if self.eat_word(b"true") => Ok(Value::Bool(true)),
            Some(b'f') if self.eat_word(b"false") => Ok(Value::Bool(false)),
            Some(_) => Err(self.error("expected a value")),
            None => Err(self.error("unexpected end of input")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_blank()?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_blank()?;
            items.push(self.value(depth + 1)?);
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.pos += 1;
        let mut members = Vec::new();
        self.skip_blank()?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_blank()?;
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_blank()?;
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.pos += 1;
            self.skip_blank()?;
            let value = self.value(depth + 1)?;
            members.push((key, value));
            self.skip_blank()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, JsonError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let run_start = self.pos;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.input[run_start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                _ => return Err(self.error("unterminated string")),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let Some(byte) = self.peek() else {
            return Err(self.error("unterminated escape"));
        };
        self.pos += 1;
        let decoded = match byte {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let code = self.hex4()?;
                let scalar = if (0xD800..0xDC00).contains(&code) {
                    if !self.eat_word(b"\\u") {
                        return Err(self.error("lone high surrogate"));
                    }
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.error("invalid low surrogate"));
                    }
                    0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..0xE000).contains(&code) {
                    return Err(self.error("lone low surrogate"));
                } else {
                    code
                };
                let ch = char::from_u32(scalar).ok_or_else(|| self.error("invalid code point"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            _ => return Err(self.error("invalid escape")),
        };
        out.push(decoded);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .input
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let mut code = 0u32;
        for &digit in digits {
            let nibble = (digit as char)
                .to_digit(16)
                .ok_or_else(|| self.error("invalid hex digit"))?;
            code = code * 16 + nibble;
        }
        self.pos += 4;
        Ok(code)
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
            if self.eat_word(b"Infinity") {
                return Ok(Value::Float(f64::NEG_INFINITY));
            }
        }
        let digits_start = self.pos;
        self.skip_digits();
        if self.pos == digits_start {
            return Err(self.error("expected digits"));
        }
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            is_float = true;
            self.pos += 1;
            let frac_start = self.pos;
            self.skip_digits();
            if self.pos == frac_start {
                return Err(self.error("expected digits after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            is_float = true;
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            let exp_start = self.pos;
            self.skip_digits();
            if self.pos == exp_start {
                return Err(self.error("expected exponent digits"));
            }
        }
        // The slice holds only ASCII digits, signs, '.' and 'e', so it is valid UTF-8.
        let text = std::str::from_utf8(&self.input[start..self.pos])
            .map_err(|_| self.error("invalid number"))?;
        if is_float {
            text.parse()
                .map(Value::Float)
                .map_err(|_| self.error("invalid number"))
        } else {
            Ok(text
                .parse()
                .map(Value::Int)
                .unwrap_or_else(|_| Value::IntLiteral(text.to_owned())))
        }
    }

    fn skip_digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }
}

/// Appends `bytes` as a JSON string literal with Yojson's escaping: `"` `\` and the C0 controls
/// and DEL are escaped (`\b \f \n \r \t`, else `\u00xx` in lower-case hex); every other byte,
/// including bytes ≥ 0x80 and invalid UTF-8, is copied raw. `/` is not escaped.
pub fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut index = 0;
    // Eight bytes at a time: a JSON payload has a quote every few bytes, and looking at
    // them one by one cost most of a Transfer reply's encoding.
    while let Some(word) = bytes.get(index..index + 8) {
        let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        let mut flags = escape_flags(word);
        // Each flagged byte goes through `write_byte`, each run of plain bytes between them
        // through `push_word_bytes`: one pass over the word, however many bytes it escapes.
        let mut plain_from = 0;
        while flags != 0 {
            let escaped = (flags.trailing_zeros() / 8) as usize;
            push_word_bytes(out, word, plain_from, escaped);
            write_byte(out, (word >> (8 * escaped)) as u8);
            plain_from = escaped + 1;
            flags &= flags - 1;
        }
        if plain_from < 8 {
            push_word_bytes(out, word, plain_from, 8);
        }
        index += 8;
    }
    for &byte in &bytes[index..] {
        write_byte(out, byte);
    }
    out.push(b'"');
}

/// Appends bytes `from..to` of `word` (little-endian: byte 0 in the low bits; `from` below
/// 8) as one store of eight bytes cut back to the run's length, which costs less than a call
/// to `memcpy` for a short run. Always inlined: with a plain `#[inline]` the `dist` build
/// kept it inline but escaped a Transfer reply's strings in 28 more instructions per exchange
/// (callgrind, 648 against 620).
#[inline(always)]
fn push_word_bytes(out: &mut Vec<u8>, word: u64, from: usize, to: usize) {
    let kept = out.len() + (to - from);
    out.extend_from_slice(&(word >> (8 * from)).to_le_bytes());
    out.truncate(kept);
}

/// How [`write_string`] writes each byte: 0 for as itself, else the letter after its `\`
/// (`u` for `\u00xx`).
static ESCAPES: [u8; 256] = {
    let mut escapes = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        escapes[byte] = b'u';
        byte += 1;
    }
    escapes[0x7f] = b'u';
    escapes[b'"' as usize] = b'"';
    escapes[b'\\' as usize] = b'\\';
    escapes[0x08] = b'b';
    escapes[0x0c] = b'f';
    escapes[b'\n' as usize] = b'n';
    escapes[b'\r' as usize] = b'r';
    escapes[b'\t' as usize] = b't';
    escapes
};

/// One byte of a string literal, escaped as [`ESCAPES`] says.
#[inline]
fn write_byte(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPES[usize::from(byte)] {
        0 => out.push(byte),
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
        letter => out.extend_from_slice(&[b'\\', letter]),
    }
}

/// The bytes of `word` (little-endian: byte 0 in the low bits) that may need an escape in a
/// JSON string, one below 0x20, `"`, `\` or 0x7f, flagged by their high bit; zero when none
/// does. Every byte that needs one is flagged, and the lowest flag is always right; a flag
/// above it may be wrong (each test's borrow runs upwards), which costs [`write_string`] only
/// a call to [`write_byte`] that writes the byte as itself.
fn escape_flags(word: u64) -> u64 {
    bytes_below(word, 0x20)
        | bytes_equal(word, b'"')
        | bytes_equal(word, b'\\')
        | bytes_equal(word, 0x7f)
}

/// Appends `value` as compact JSON, the way Yojson prints a tree (strings escaped by
/// [`write_string`], floats by [`write_float`], integer literals kept as read).
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    write_value_mapped(out, value, &|bytes| std::borrow::Cow::Borrowed(bytes));
}

/// Like [`write_value`], but every string and object key goes through `map` first (the
/// trace uses it to cut long strings).
pub fn write_value_mapped(
    out: &mut Vec<u8>,
    value: &Value,
    map: &dyn Fn(&[u8]) -> std::borrow::Cow<'_, [u8]>,
) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(n) => write_int(out, *n),
        Value::IntLiteral(text) => out.extend_from_slice(text.as_bytes()),
        Value::Float(f) => write_float(out, *f),
        Value::String(bytes) => write_string(out, &map(bytes)),
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_value_mapped(out, item, map);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            out.push(b'{');
            for (index, (key, item)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_string(out, &map(key));
                out.push(b':');
                write_value_mapped(out, item, map);
            }
            out.push(b'}');
        }
    }
}

/// Appends an integer as a bare decimal, as rpclib prints `int64`.
pub fn write_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends a float the way Yojson prints it: `%.16g`, or `%.17g` when that does not read back
/// as the same number, then `.0` when the text holds only digits and `-` (so `5.0`, `30.0`,
/// `0.5`, `1e+20`). NaN and infinities print as `NaN`, `Infinity` and `-Infinity`.
pub fn write_float(out: &mut Vec<u8>, value: f64) {
    out.extend_from_slice(format_float(value).as_bytes());
}

/// The text [`write_float`] appends.
pub fn format_float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    let mut text = format_g(value, 16);
    if text.parse::<f64>().ok() != Some(value) {
        text = format_g(value, 17);
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        text.push_str(".0");
    }
    text
}

/// C's `%.{precision}g` for a finite value.
fn format_g(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // `{:e}` gives the correctly rounded mantissa and the decimal exponent after rounding.
    let scientific = format!("{:.*e}", precision - 1, value);
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("Rust's {:e} output always holds an 'e'");
    let exponent: i32 = exponent
        .parse()
        .expect("Rust's {:e} exponent is an integer");
    if exponent < -4 || exponent >= precision as i32 {
        let mantissa = strip_fraction_zeros(mantissa);
        let mut text = String::with_capacity(mantissa.len() + 5);
        text.push_str(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(text, "e{sign}{:02}", exponent.abs());
        text
    } else {
        let decimals = (precision as i32 - 1 - exponent).max(0) as usize;
        let fixed = format!("{:.*}", decimals, value);
        strip_fraction_zeros(&fixed).to_owned()
    }
}

fn strip_fraction_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_string(&mut out, bytes);
        out
    }

    #[test]
    fn escapes_like_yojson() {
        assert_eq!(string(b"a\"b\\c/d"), b"\"a\\\"b\\\\c/d\"");
        assert_eq!(string(b"\x08\x0c\n\r\t"), b"\"\\b\\f\\n\\r\\t\"");
        assert_eq!(
            string(b"\x00\x01\x1f\x7f"),
            b"\"\\u0000\\u0001\\u001f\\u007f\""
        );
        assert_eq!(string(b"\xff\xc3\xa9"), b"\"\xff\xc3\xa9\"");
    }

    /// `bytes` as a string literal written one byte at a time: what `write_string` must
    /// write, word by word.
    fn string_byte_by_byte(bytes: &[u8]) -> Vec<u8> {
        let mut literal = vec![b'"'];
        for &byte in bytes {
            write_byte(&mut literal, byte);
        }
        literal.push(b'"');
        literal
    }

    /// Every byte that needs an escape is flagged, whatever the byte below it (so whatever
    /// borrow each test carries into it): `write_string` copies unflagged bytes raw.
    #[test]
    fn escape_flags_miss_no_byte_that_needs_an_escape() {
        for below in 0..=255u8 {
            for byte in 0..=255u8 {
                let word = u64::from_le_bytes([below, byte, b'a', b'a', b'a', b'a', b'a', b'a']);
                let flags = escape_flags(word);
                for (index, value) in [(0, below), (1, byte)] {
                    let flagged = flags & 0x80 << (8 * index) != 0;
                    assert!(
                        flagged || ESCAPES[usize::from(value)] == 0,
                        "{value:#04x} after {below:#04x} is not flagged"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// The word-at-a-time escaper writes what escaping byte by byte writes, for any bytes
        /// (quotes, controls and DEL anywhere in a word, any length of tail).
        #[test]
        fn escaping_by_words_matches_escaping_by_bytes(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"\"\\\n\x00\x1f\x7fa/\xff".to_vec()),
                    proptest::prelude::any::<u8>(),
                ],
                0..80,
            )
        ) {
            proptest::prop_assert_eq!(string(&bytes), string_byte_by_byte(&bytes));
        }

        /// Long strings, mostly of the bytes that need the longest escape (`\u00xx`), with
        /// several flags in nearly every word.
        #[test]
        fn long_strings_escape_as_bytes_do(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::sample::select(b"\x00\x01\x1f\x7f".to_vec()),
                    1 => proptest::sample::select(b"\"\\\na".to_vec()),
                ],
                0..400,
            )
        ) {
            proptest::prop_assert_eq!(string(&bytes), string_byte_by_byte(&bytes));
        }
    }

    #[test]
    fn floats_like_yojson() {
        assert_eq!(format_float(5.0), "5.0");
        assert_eq!(format_float(30.0), "30.0");
        assert_eq!(format_float(0.5), "0.5");
        assert_eq!(format_float(-2.0), "-2.0");
        assert_eq!(format_float(1e20), "1e+20");
        assert_eq!(format_float(1e-5), "1e-05");
        assert_eq!(format_float(0.1), "0.1");
        assert_eq!(format_float(1700000000.123456), "1700000000.123456");
        assert_eq!(format_float(1700000000.5), "1700000000.5");
        assert_eq!(format_float(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(format_float(0.0), "0.0");
        assert_eq!(format_float(123456789012345678.0), "1.2345678901234568e+17");
    }

    #[test]
    fn parses_yojson_extensions() {
        assert_eq!(
            parse(b" // c\n [1, /* x */ NaN]")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            parse(b"-Infinity").unwrap(),
            Value::Float(f64::NEG_INFINITY)
        );
        assert_eq!(
            parse(b"99999999999999999999").unwrap(),
            Value::IntLiteral("99999999999999999999".into())
        );
        assert_eq!(
            parse(b"\"\xff\x01\"").unwrap(),
            Value::String(vec![0xff, 1])
        );
        assert_eq!(
            parse(br#""\ud83d\ude00\u00e9""#).unwrap(),
            Value::String("😀é".as_bytes().to_vec())
        );
    }

    #[test]
    fn rejects_what_yojson_rejects() {
        assert_eq!(parse(b"  "), Err(JsonError::Blank));
        assert!(parse(b"[1,]").is_err());
        assert!(parse(b"'a'").is_err());
        assert!(parse(b"1 2").is_err());
        assert!(parse(b"{\"a\" 1}").is_err());
        assert!(parse(&[b'['; 1000]).is_err());
    }

    #[test]
    fn member_lookup_is_case_insensitive_and_last_wins() {
        let value = parse(br#"{"From":"1","from":"2","x":3}"#).unwrap();
        assert_eq!(value.member("FROM"), Some(&Value::String(b"2".to_vec())));
        assert_eq!(value.member("missing"), None);
    }
}
