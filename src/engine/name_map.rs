//! Maps keyed by queue name, which every request looks up several times (the queue of a Send
//! or an Ack, its reply queue, the Transfers parked on it).
//!
//! An ordered map compares the name with about a dozen others per search; the standard
//! library's SipHash costs about as much again for a name of a few dozen bytes
//! (docs/performance.md). foldhash hashes it in a few multiplications. Its seeds are drawn
//! from the operating system's random source (through the standard library's keyed hasher;
//! foldhash's own default seeds from address-space layout and the time), one shared by the
//! process and one per map, so names chosen to collide cannot be prepared in advance. It is
//! not a keyed hash in the cryptographic sense: a client that measured the switch's timing
//! long enough might learn enough to make collisions, which a local service of the host is
//! not expected to do, and the queue limit bounds what collisions could cost. Nothing shows a
//! map's order: walks in name order go by an ordered index of names kept beside the map.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;

use crate::protocol::QueueName;

/// A map keyed by queue name with a randomly seeded fast hash (see the module doc).
pub(crate) type NameMap<V> = HashMap<QueueName, V, NameHash>;

/// The hasher builder of [`NameMap`]: foldhash with seeds from the OS's random source.
#[derive(Clone, Debug)]
pub(crate) struct NameHash(SeedableRandomState);

impl Default for NameHash {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(os_random_u64()));
        NameHash(SeedableRandomState::with_seed(os_random_u64(), shared))
    }
}

impl BuildHasher for NameHash {
    type Hasher = <SeedableRandomState as BuildHasher>::Hasher;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// 64 unpredictable bits: the standard library keys each `RandomState` from the OS's random
/// source (per thread, then advanced), so its hash of nothing is such a number.
fn os_random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_get_different_seeds_and_equal_names_hash_alike_within_one() {
        let (one, other) = (NameHash::default(), NameHash::default());
        let name = QueueName::from("org.xen.xapi.xenops.classic");
        assert_eq!(one.hash_one(&name), one.hash_one(name.clone()));
        assert_ne!(one.hash_one(&name), other.hash_one(&name));
    }
}
