//! A hasher for the driver's maps keyed by the ids it hands out itself (request and
//! connection ids: sequential `u64`s, never chosen by a client), and for keys that carry a
//! randomly keyed hash of their own already (the fair queue's `ClientKey`).
//!
//! The standard library's SipHash resists keys chosen to collide, which these ids cannot be;
//! it costs four hashes per request in the driver (two maps, insert and remove), measurably
//! (docs/performance.md). A multiplication by an odd constant is a bijection on the low bits
//! (so sequential ids fill distinct buckets) and spreads into the high bits that hashbrown
//! uses for its control bytes.

use std::hash::{BuildHasherDefault, Hasher};

/// `HashMap<K, V, IdHash>` for keys that hash as one `u64`.
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

/// 2^64 / φ, odd.
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0.rotate_left(5) ^ value).wrapping_mul(MULTIPLIER);
    }

    /// Keys that are not one `u64` still hash correctly, a byte at a time.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_hash_apart_and_maps_work() {
        let build = IdHash::default();
        let hashes: HashSet<u64> = (0..10_000u64).map(|id| build.hash_one(id)).collect();
        assert_eq!(hashes.len(), 10_000);
        let mut map: HashMap<u64, u64, IdHash> = HashMap::default();
        for id in 0..10_000 {
            map.insert(id, id * 2);
        }
        assert!((0..10_000).all(|id| map.get(&id) == Some(&(id * 2))));
        assert_ne!(
            build.hash_one(b"ab".as_slice()),
            build.hash_one(b"ba".as_slice())
        );
    }
}
