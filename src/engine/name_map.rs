//! Maps keyed by queue name, which every request looks up several times (the queue of a Send
//! or an Ack, its reply queue, the Transfers parked on it).
//!
//! An ordered map compares the name with about a dozen others per search; the standard
//! library's SipHash costs about as much again for a name of a few dozen bytes
//! (docs/performance.md). foldhash hashes it in a few multiplications, with a seed drawn at
//! random for each map, so that names chosen to collide cannot be prepared in advance. Its
//! resistance is the minimal kind: it does not stand up to a client that studies the timing of
//! a long-running switch to recover the seed, which a local service of the host is not
//! expected to do. Nothing shows a map's order: walks in name order go by an ordered index of
//! names kept beside the map.

use std::collections::HashMap;

use crate::protocol::QueueName;

/// A map keyed by queue name with a randomly seeded fast hash (see the module doc).
pub(crate) type NameMap<V> = HashMap<QueueName, V, foldhash::fast::RandomState>;
