//! A reader of s-expressions as OCaml's sexplib writes and reads them, keeping the line and
//! column of every atom and list so that errors can point into the file. Used by the
//! `--config` file (`config`, text atoms only: [`parse`]) and by the import of the original
//! switch's state (`store::original`, whose atoms are payloads of any bytes:
//! [`parse_binary`]); it sits below both layers and imports nothing of the crate.
//!
//! The syntax: lists in parentheses; atoms either bare (a run of characters other than
//! white space, `(`, `)`, `"` and `;`) or quoted (`"..."` with OCaml's escapes `\\ \" \' \n
//! \t \b \r \space \DDD \xHH`, and a backslash before a line break continuing the string
//! after the next line's leading blanks). Comments: `;` to the end of the line, `#| … |#`
//! (nesting, and skipping quoted strings inside), and `#;` which comments out the next
//! s-expression.

use std::fmt;

/// A place in the text: both numbers start at 1; the column counts characters, not bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// The line, from 1.
    pub line: u32,
    /// The column within the line, in characters, from 1.
    pub column: u32,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One s-expression with the position where it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sexp {
    /// An atom: its bytes after unquoting.
    Atom {
        /// The atom's bytes (quoted atoms are unescaped). Always UTF-8 when read by
        /// [`parse`]; any bytes when read by [`parse_binary`].
        bytes: Vec<u8>,
        /// Where the atom starts (its opening quote, if quoted).
        at: Position,
    },
    /// A list of s-expressions.
    List {
        /// The elements, in order.
        items: Vec<Sexp>,
        /// Where the opening parenthesis is.
        at: Position,
    },
}

impl Sexp {
    /// Where this s-expression starts.
    pub fn at(&self) -> Position {
        match self {
            Sexp::Atom { at, .. } | Sexp::List { at, .. } => *at,
        }
    }

    /// The text of an atom whose bytes are UTF-8; `None` for a list or other bytes.
    pub fn text(&self) -> Option<&str> {
        match self {
            Sexp::Atom { bytes, .. } => std::str::from_utf8(bytes).ok(),
            Sexp::List { .. } => None,
        }
    }
}

/// What is wrong with the text, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct SyntaxError {
    /// Where the problem was found.
    pub at: Position,
    /// What the problem is.
    pub kind: SyntaxErrorKind,
}

/// The kinds of syntax error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyntaxErrorKind {
    /// A `(` whose `)` never comes (the position is the `(`).
    #[error("unbalanced parentheses: this `(` is never closed")]
    UnclosedList,
    /// A `)` with no `(` before it.
    #[error("unbalanced parentheses: `)` without a matching `(`")]
    UnexpectedClose,
    /// A `"` whose closing `"` never comes (the position is the opening one).
    #[error("unterminated string: this `\"` is never closed")]
    UnterminatedString,
    /// A `#|` whose `|#` never comes.
    #[error("unterminated comment: this `#|` is never closed")]
    UnterminatedComment,
    /// A `|#` outside any block comment.
    #[error("`|#` outside a comment")]
    StrayCommentEnd,
    /// A `#;` with no s-expression after it.
    #[error("`#;` comments out nothing")]
    EmptySexpComment,
    /// A backslash sequence that OCaml does not define, or a `\DDD` above 255.
    #[error("bad escape `{0}` in a quoted atom")]
    BadEscape(String),
    /// The escapes of a quoted atom produce bytes that are not UTF-8.
    #[error("the quoted atom is not valid UTF-8 once unescaped")]
    NotUtf8,
}

/// Reads every top-level s-expression of `text`; a quoted atom whose escapes make bytes
/// that are not UTF-8 is an error ([`SyntaxErrorKind::NotUtf8`]).
pub fn parse(text: &str) -> Result<Vec<Sexp>, SyntaxError> {
    parse_with(text, AtomBytes::Utf8)
}

/// Reads every top-level s-expression of `text`, where quoted atoms may stand for any bytes
/// (`"\000\255"`), as sexplib writes OCaml strings.
pub fn parse_binary(text: &str) -> Result<Vec<Sexp>, SyntaxError> {
    parse_with(text, AtomBytes::Any)
}

/// Which bytes a quoted atom may stand for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AtomBytes {
    Utf8,
    Any,
}

fn parse_with(text: &str, atom_bytes: AtomBytes) -> Result<Vec<Sexp>, SyntaxError> {
    let mut reader = Reader::new(text, atom_bytes);
    let mut all = Vec::new();
    while let Some(sexp) = reader.next_sexp()? {
        all.push(sexp);
    }
    // `next_sexp` stops before a `)`, which at the top level closes nothing.
    if reader.peek() == Some(')') {
        return Err(reader.error(reader.at, SyntaxErrorKind::UnexpectedClose));
    }
    Ok(all)
}

/// A cursor over the text that knows its line and column.
struct Reader<'a> {
    rest: std::iter::Peekable<std::str::Chars<'a>>,
    /// The text from the cursor on, to look two characters ahead.
    text: &'a str,
    offset: usize,
    at: Position,
    atom_bytes: AtomBytes,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str, atom_bytes: AtomBytes) -> Reader<'a> {
        Reader {
            rest: text.chars().peekable(),
            text,
            offset: 0,
            at: Position { line: 1, column: 1 },
            atom_bytes,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.rest.peek().copied()
    }

    fn starts_with(&self, prefix: &str) -> bool {
        self.text[self.offset..].starts_with(prefix)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.rest.next()?;
        self.offset += c.len_utf8();
        if c == '\n' {
            self.at.line += 1;
            self.at.column = 1;
        } else {
            self.at.column += 1;
        }
        Some(c)
    }

    fn error(&self, at: Position, kind: SyntaxErrorKind) -> SyntaxError {
        SyntaxError { at, kind }
    }

    /// The next s-expression at this level, or `None` at the end of the text or before a
    /// `)` (which the caller consumes).
    fn next_sexp(&mut self) -> Result<Option<Sexp>, SyntaxError> {
        self.skip_blanks_and_comments()?;
        let at = self.at;
        match self.peek() {
            None => Ok(None),
            Some(')') => Ok(None),
            Some('(') => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    match self.next_sexp()? {
                        Some(item) => items.push(item),
                        None if self.peek() == Some(')') => {
                            self.bump();
                            return Ok(Some(Sexp::List { items, at }));
                        }
                        None => return Err(self.error(at, SyntaxErrorKind::UnclosedList)),
                    }
                }
            }
            Some('"') => {
                let bytes = self.quoted()?;
                Ok(Some(Sexp::Atom { bytes, at }))
            }
            Some(_) => {
                let bytes = self.bare()?.into_bytes();
                Ok(Some(Sexp::Atom { bytes, at }))
            }
        }
    }

    /// Skips white space and the three kinds of comment.
    fn skip_blanks_and_comments(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_whitespace() => {
                    self.bump();
                }
                Some(';') => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                Some('#') if self.starts_with("#|") => self.block_comment()?,
                Some('#') if self.starts_with("#;") => {
                    let at = self.at;
                    self.bump();
                    self.bump();
                    if self.next_sexp()?.is_none() {
                        return Err(self.error(at, SyntaxErrorKind::EmptySexpComment));
                    }
                }
                Some('|') if self.starts_with("|#") => {
                    return Err(self.error(self.at, SyntaxErrorKind::StrayCommentEnd));
                }
                _ => return Ok(()),
            }
        }
    }

    /// Skips a `#| … |#` comment, with nested ones and quoted strings inside it (so that a
    /// `|#` inside a string does not end the comment, as in sexplib).
    fn block_comment(&mut self) -> Result<(), SyntaxError> {
        let mut openings = vec![self.at];
        self.bump();
        self.bump();
        while let Some(&start) = openings.last() {
            if self.starts_with("#|") {
                openings.push(self.at);
                self.bump();
                self.bump();
            } else if self.starts_with("|#") {
                openings.pop();
                self.bump();
                self.bump();
            } else if self.peek() == Some('"') {
                self.quoted()?;
            } else if self.bump().is_none() {
                return Err(self.error(start, SyntaxErrorKind::UnterminatedComment));
            }
        }
        Ok(())
    }

    /// A bare atom: up to white space, a parenthesis, a quote or a `;`.
    fn bare(&mut self) -> Result<String, SyntaxError> {
        let mut text = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() || matches!(c, '(' | ')' | '"' | ';') {
                break;
            }
            if self.starts_with("|#") {
                return Err(self.error(self.at, SyntaxErrorKind::StrayCommentEnd));
            }
            text.push(c);
            self.bump();
        }
        Ok(text)
    }

    /// A quoted atom, unescaped.
    fn quoted(&mut self) -> Result<Vec<u8>, SyntaxError> {
        let start = self.at;
        self.bump();
        let mut bytes = Vec::new();
        loop {
            match self.bump() {
                None => return Err(self.error(start, SyntaxErrorKind::UnterminatedString)),
                Some('"') => break,
                Some('\\') => self.escape(&mut bytes)?,
                Some(c) => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        if self.atom_bytes == AtomBytes::Utf8 && std::str::from_utf8(&bytes).is_err() {
            return Err(self.error(start, SyntaxErrorKind::NotUtf8));
        }
        Ok(bytes)
    }

    /// One escape after its backslash, appended to `bytes`.
    fn escape(&mut self, bytes: &mut Vec<u8>) -> Result<(), SyntaxError> {
        let at = Position {
            line: self.at.line,
            column: self.at.column - 1,
        };
        let bad = |reader: &Self, seen: &str| {
            reader.error(at, SyntaxErrorKind::BadEscape(format!("\\{seen}")))
        };
        let Some(c) = self.bump() else {
            return Err(self.error(at, SyntaxErrorKind::BadEscape("\\".into())));
        };
        let byte = match c {
            '\\' => b'\\',
            '"' => b'"',
            '\'' => b'\'',
            'n' => b'\n',
            't' => b'\t',
            'b' => 0x08,
            'r' => b'\r',
            ' ' => b' ',
            '\n' => {
                // A line continuation: the break and the next line's indentation vanish.
                while matches!(self.peek(), Some(' ' | '\t')) {
                    self.bump();
                }
                return Ok(());
            }
            'x' => {
                let digits = self.take(2, |c| c.is_ascii_hexdigit());
                u8::from_str_radix(&digits, 16)
                    .ok()
                    .filter(|_| digits.len() == 2)
                    .ok_or_else(|| bad(self, &format!("x{digits}")))?
            }
            c if c.is_ascii_digit() => {
                let digits = format!("{c}{}", self.take(2, |c| c.is_ascii_digit()));
                digits
                    .parse::<u8>()
                    .ok()
                    .filter(|_| digits.len() == 3)
                    .ok_or_else(|| bad(self, &digits))?
            }
            other => return Err(bad(self, &other.to_string())),
        };
        bytes.push(byte);
        Ok(())
    }

    /// Up to `count` characters satisfying `accept`.
    fn take(&mut self, count: usize, accept: impl Fn(char) -> bool) -> String {
        let mut taken = String::new();
        while taken.len() < count && self.peek().is_some_and(&accept) {
            taken.extend(self.bump());
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(text: &str, line: u32, column: u32) -> Sexp {
        Sexp::Atom {
            bytes: text.into(),
            at: Position { line, column },
        }
    }

    fn error(text: &str) -> (u32, u32, String) {
        let error = parse(text).expect_err("a syntax error");
        (error.at.line, error.at.column, error.kind.to_string())
    }

    #[test]
    fn positions_of_atoms_and_lists() {
        let sexps = parse("((path /var/run/x)\n (pidfile ()))").expect("valid");
        let Sexp::List { items, at } = &sexps[0] else {
            panic!("a list: {sexps:?}");
        };
        assert_eq!(*at, Position { line: 1, column: 1 });
        let Sexp::List { items: path, .. } = &items[0] else {
            panic!("a list");
        };
        assert_eq!(path[0], atom("path", 1, 3));
        assert_eq!(path[1], atom("/var/run/x", 1, 8));
        let Sexp::List { items: pidfile, at } = &items[1] else {
            panic!("a list");
        };
        assert_eq!(*at, Position { line: 2, column: 2 });
        assert_eq!(
            pidfile[1],
            Sexp::List {
                items: vec![],
                at: Position {
                    line: 2,
                    column: 11
                }
            }
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let sexps = parse("(é ü x)").expect("valid");
        let Sexp::List { items, .. } = &sexps[0] else {
            panic!("a list");
        };
        assert_eq!(items[2], atom("x", 1, 6));
    }

    #[test]
    fn quoted_atoms_with_every_escape() {
        let sexps = parse(r#""a\\b\"c\'d\ne\tf\bg\rh\ i\065\x42" """#).expect("valid");
        assert_eq!(sexps[0], atom("a\\b\"c'd\ne\tf\x08g\rh iAB", 1, 1));
        assert_eq!(sexps[1], atom("", 1, 37));
    }

    #[test]
    fn quoted_atoms_keep_blanks_parens_and_semicolons() {
        let sexps = parse(r#"("/var/run/my switch (1);x")"#).expect("valid");
        let Sexp::List { items, .. } = &sexps[0] else {
            panic!("a list");
        };
        assert_eq!(items[0], atom("/var/run/my switch (1);x", 1, 2));
    }

    #[test]
    fn a_backslash_newline_continues_the_string() {
        let sexps = parse("\"abc\\\n      def\"").expect("valid");
        assert_eq!(sexps[0], atom("abcdef", 1, 1));
    }

    #[test]
    fn comments_of_all_three_kinds() {
        let text = "; a line comment\n#| a block #| nested |# \"|#\" |#\n(a #;(b c) #; d e) ; end";
        let sexps = parse(text).expect("valid");
        assert_eq!(
            sexps,
            vec![Sexp::List {
                items: vec![atom("a", 3, 2), atom("e", 3, 17)],
                at: Position { line: 3, column: 1 },
            }]
        );
    }

    #[test]
    fn unbalanced_parentheses_point_at_the_culprit() {
        assert_eq!(
            error("((a b)\n (c d)"),
            (
                1,
                1,
                "unbalanced parentheses: this `(` is never closed".into()
            )
        );
        assert_eq!(
            error("((a b))\n)"),
            (
                2,
                1,
                "unbalanced parentheses: `)` without a matching `(`".into()
            )
        );
    }

    #[test]
    fn unterminated_strings_and_comments() {
        assert_eq!(error("(a\n  \"abc)").0, 2);
        assert_eq!(error("(a\n  \"abc)").1, 3);
        assert_eq!(
            error("x #| a #| b |# c"),
            (
                1,
                3,
                "unterminated comment: this `#|` is never closed".into()
            )
        );
        assert_eq!(error("a |# b"), (1, 3, "`|#` outside a comment".into()));
        assert_eq!(error("(a #;)"), (1, 4, "`#;` comments out nothing".into()));
    }

    #[test]
    fn bad_escapes() {
        assert_eq!(
            error(r#"(a "x\qy")"#),
            (1, 6, "bad escape `\\q` in a quoted atom".into())
        );
        assert_eq!(error(r#""\256""#).2, "bad escape `\\256` in a quoted atom");
        assert_eq!(error(r#""\12""#).2, "bad escape `\\12` in a quoted atom");
        assert_eq!(error(r#""\xZ1""#).2, "bad escape `\\x` in a quoted atom");
        assert_eq!(
            error(r#""\xff""#).2,
            "the quoted atom is not valid UTF-8 once unescaped"
        );
    }

    #[test]
    fn binary_atoms_keep_any_bytes() {
        let sexps = parse_binary(r#"(payload "\000\255\xfe \"q\" (p)" bare)"#).expect("valid");
        let Sexp::List { items, .. } = &sexps[0] else {
            panic!("a list: {sexps:?}");
        };
        assert_eq!(items[1], atom_bytes(b"\0\xff\xfe \"q\" (p)", 1, 10));
        assert_eq!(items[1].text(), None, "not UTF-8");
        assert_eq!(items[2].text(), Some("bare"));
        assert_eq!(items[0].text(), Some("payload"));
        assert_eq!(sexps[0].text(), None, "a list");
    }

    fn atom_bytes(bytes: &[u8], line: u32, column: u32) -> Sexp {
        Sexp::Atom {
            bytes: bytes.to_vec(),
            at: Position { line, column },
        }
    }
}
