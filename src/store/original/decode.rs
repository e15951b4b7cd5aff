//! Typed reading of the s-expressions that OCaml's `ppx_sexp_conv` writes: records, options,
//! variants, `int64`s and strings, with errors that say where and what was expected.

use crate::sexp::{Position, Sexp};

/// What is wrong with a value, and where it starts in its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// Where the offending s-expression starts.
    pub(crate) at: Position,
    /// What was expected, and of what.
    pub(crate) reason: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.at.line, self.at.column, self.reason
        )
    }
}

pub(crate) type Decoded<T> = Result<T, Mismatch>;

fn mismatch<T>(sexp: &Sexp, reason: String) -> Decoded<T> {
    Err(Mismatch {
        at: sexp.at(),
        reason,
    })
}

/// The bytes of an atom (`what` names it for the error).
pub(crate) fn atom<'a>(sexp: &'a Sexp, what: &str) -> Decoded<&'a [u8]> {
    match sexp {
        Sexp::Atom { bytes, .. } => Ok(bytes),
        Sexp::List { .. } => mismatch(sexp, format!("expected {what} (an atom), found a list")),
    }
}

/// The items of a list.
pub(crate) fn list<'a>(sexp: &'a Sexp, what: &str) -> Decoded<&'a [Sexp]> {
    match sexp {
        Sexp::List { items, .. } => Ok(items),
        Sexp::Atom { .. } => mismatch(sexp, format!("expected {what} (a list), found an atom")),
    }
}

/// A list of exactly `N` items (an OCaml tuple, or a map binding).
pub(crate) fn tuple<'a, const N: usize>(sexp: &'a Sexp, what: &str) -> Decoded<&'a [Sexp; N]> {
    let items = list(sexp, what)?;
    items.try_into().or_else(|_| {
        mismatch(
            sexp,
            format!("expected {what} of {N} items, found {}", items.len()),
        )
    })
}

/// An OCaml `int64` as `Int64.to_string` writes it (decimal, optional `-`; `_` separators
/// are accepted as `Int64.of_string` does).
pub(crate) fn int64(sexp: &Sexp, what: &str) -> Decoded<i64> {
    let bytes = atom(sexp, what)?;
    let digits: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| *c != '_')
        .collect();
    digits.parse::<i64>().or_else(|_| {
        mismatch(
            sexp,
            format!("expected {what} (an int64), found {digits:?}"),
        )
    })
}

/// An OCaml `option`: `()` or `none` for none, `(x)` or `(some x)` for a value.
pub(crate) fn option<'a>(sexp: &'a Sexp, what: &str) -> Decoded<Option<&'a Sexp>> {
    match sexp {
        Sexp::Atom { bytes, .. } if matches!(bytes.as_slice(), b"none" | b"None") => Ok(None),
        Sexp::List { items, .. } => match items.as_slice() {
            [] => Ok(None),
            [value] => Ok(Some(value)),
            [Sexp::Atom { bytes, .. }, value] if matches!(bytes.as_slice(), b"some" | b"Some") => {
                Ok(Some(value))
            }
            _ => mismatch(sexp, format!("expected {what} (an option: () or (value))")),
        },
        Sexp::Atom { .. } => mismatch(sexp, format!("expected {what} (an option: () or (value))")),
    }
}

/// A variant constructor and its arguments: `(Tag a b …)`, or a bare `Tag` for one without.
/// The tag is returned with its first letter capitalised (`ppx_sexp_conv` accepts both).
pub(crate) fn variant<'a>(sexp: &'a Sexp, what: &str) -> Decoded<(String, &'a [Sexp])> {
    let (tag, arguments) = match sexp {
        Sexp::Atom { bytes, .. } => (bytes.as_slice(), &[][..]),
        Sexp::List { items, .. } => match items.split_first() {
            Some((Sexp::Atom { bytes, .. }, arguments)) => (bytes.as_slice(), arguments),
            _ => return mismatch(sexp, format!("expected {what} (a variant: (Tag …))")),
        },
    };
    let mut tag = String::from_utf8_lossy(tag).into_owned();
    if let Some(first) = tag.get(..1) {
        tag.replace_range(..1, &first.to_ascii_uppercase());
    }
    Ok((tag, arguments))
}

/// The fields `names` of a record `((name value) …)`, in that order: `None` for a field that
/// is absent. Fields not named are ignored; a field given twice is an error.
pub(crate) fn record<'a, const N: usize>(
    sexp: &'a Sexp,
    what: &str,
    names: [&str; N],
) -> Decoded<[Option<&'a Sexp>; N]> {
    let mut values = [None; N];
    for field in list(sexp, what)? {
        let [name, value] = tuple::<2>(field, &format!("a field of {what}"))?;
        let name = atom(name, &format!("a field name of {what}"))?;
        if let Some(slot) = names.iter().position(|wanted| wanted.as_bytes() == name) {
            if values[slot].is_some() {
                return mismatch(
                    field,
                    format!("field {} of {what} given twice", names[slot]),
                );
            }
            values[slot] = Some(value);
        }
    }
    Ok(values)
}

/// A field of a record that must be present.
pub(crate) fn required<'a>(
    record: &'a Sexp,
    value: Option<&'a Sexp>,
    what: &str,
    name: &str,
) -> Decoded<&'a Sexp> {
    value.map_or_else(
        || mismatch(record, format!("{what} has no field {name}")),
        Ok,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sexp::parse_binary;

    fn one(text: &str) -> Sexp {
        parse_binary(text).expect("valid").remove(0)
    }

    #[test]
    fn records_options_variants_and_numbers() {
        let sexp = one("((b (x)) (a ()) (ignored 1) (c (Request \"r\\000\")))");
        let [a, b, c] = record(&sexp, "a test", ["a", "b", "c"]).expect("a record");
        assert_eq!(option(a.unwrap(), "a").unwrap(), None);
        assert_eq!(
            atom(option(b.unwrap(), "b").unwrap().unwrap(), "b").unwrap(),
            b"x"
        );
        let (tag, arguments) = variant(c.unwrap(), "c").unwrap();
        assert_eq!(tag, "Request");
        assert_eq!(atom(&arguments[0], "r").unwrap(), b"r\0");
        assert_eq!(int64(&one("-1_000"), "n"), Ok(-1000));
        assert_eq!(variant(&one("name"), "v").unwrap().0, "Name");
    }

    #[test]
    fn mismatches_say_where_and_what() {
        let sexp = one("((a 1) (a 2))");
        let error = record(&sexp, "a test", ["a"]).expect_err("a duplicate");
        assert_eq!(
            error.to_string(),
            "line 1, column 8: field a of a test given twice"
        );
        let error = int64(&one("12x"), "an id").expect_err("not a number");
        assert_eq!(
            error.to_string(),
            "line 1, column 1: expected an id (an int64), found \"12x\""
        );
        let error = tuple::<2>(&one("(a b c)"), "a pair").expect_err("three items");
        assert_eq!(error.reason, "expected a pair of 2 items, found 3");
        let sexp = one("((b 1))");
        let [a] = record(&sexp, "a test", ["a"]).unwrap();
        let error = required(&sexp, a, "a test", "a").expect_err("missing");
        assert_eq!(error.reason, "a test has no field a");
    }
}
