//! Looking at eight bytes at a time: the zero-byte tests on a word, and finding one of two
//! bytes in a slice with them, for the parsers of what clients send on every exchange
//! (paths, Transfer bodies: a byte-by-byte scan with two comparisons cost about twelve
//! instructions a byte there; callgrind, docs/performance.md, "a seventh pass") and the
//! JSON string writer.

/// Eight bytes of value 1, to spread one byte over a word.
const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each of a word's bytes.
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` below `limit` (at most 0x80), each flagged by its high bit; zero when
/// none is. The lowest flag is exact; a flag above it may be wrong (the subtraction's borrow
/// runs upwards), so callers take `trailing_zeros() / 8` and nothing past it.
pub(crate) fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGH
}

/// The bytes of `word` equal to `byte`, flagged as [`bytes_below`] flags them.
pub(crate) fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ (ONES * u64::from(byte)), 1)
}

/// The index of the first byte equal to `a` or `b` in `bytes` from `from` on, or
/// `bytes.len()` when there is none (or `from` is past the end).
pub(crate) fn find_either(bytes: &[u8], from: usize, a: u8, b: u8) -> usize {
    let mut index = from;
    while let Some(word) = bytes.get(index..index + 8) {
        let word = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        let flags = bytes_equal(word, a) | bytes_equal(word, b);
        if flags != 0 {
            return index + (flags.trailing_zeros() / 8) as usize;
        }
        index += 8;
    }
    bytes
        .get(index..)
        .and_then(|tail| tail.iter().position(|&byte| byte == a || byte == b))
        .map_or(bytes.len(), |offset| index + offset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_bytes(bytes: &[u8], from: usize, a: u8, b: u8) -> usize {
        (from..bytes.len())
            .find(|&index| bytes[index] == a || bytes[index] == b)
            .unwrap_or(bytes.len())
    }

    #[test]
    fn finds_the_first_of_either_byte() {
        assert_eq!(find_either(b"abc/def%", 0, b'/', b'%'), 3);
        assert_eq!(find_either(b"abc/def%", 4, b'/', b'%'), 7);
        assert_eq!(find_either(b"abcdefghijkl\"", 0, b'"', b'\\'), 12);
        assert_eq!(find_either(b"abcdefghijkl", 0, b'"', b'\\'), 12);
        assert_eq!(find_either(b"", 0, b'"', b'\\'), 0);
        assert_eq!(find_either(b"ab", 5, b'"', b'\\'), 2);
    }

    proptest! {
        /// Every byte value next to every other, at every alignment: as a plain scan.
        #[test]
        fn agrees_with_a_plain_scan(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            from in 0usize..45,
            a in any::<u8>(),
            b in any::<u8>(),
        ) {
            prop_assert_eq!(find_either(&bytes, from, a, b), by_bytes(&bytes, from, a, b));
        }

        /// Bytes drawn near the two targets (where a borrow could flag the wrong one).
        #[test]
        fn agrees_near_the_targets(
            bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'#'), Just(b'!'), Just(b'\\'), Just(b']'), Just(0xa2u8), Just(0xdcu8)], 0..40),
            from in 0usize..8,
        ) {
            prop_assert_eq!(find_either(&bytes, from, b'"', b'\\'), by_bytes(&bytes, from, b'"', b'\\'));
        }
    }
}
