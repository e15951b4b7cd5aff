//! Turns between clients in the driver: the engine's work is served round-robin between the
//! clients that have some, a bounded amount per client per turn, and new connections are
//! taken in a bounded number per turn, so that one client with many busy connections (or a
//! stream of new ones) cannot put its work ahead of everybody else's.
//!
//! The driver puts each command it receives behind its client's earlier ones
//! ([`FairQueue::push`]), then serves one turn ([`FairQueue::take_turn`]) per wake-up and
//! yields to the runtime before the next. Within a client the order is kept (so a
//! connection's connect, requests and disconnect stay in order); between clients it is
//! round-robin, and the client served first rotates from turn to turn.
//!
//! Requests answered in place (`super::in_place`), which never enter this queue, are held to
//! the same share per client by a credit per round.
//!
//! Why it matters on one thread: a reply wakes the connection task waiting for it, and tokio
//! runs woken tasks in order. A turn that answered 64 of one client's requests would put 64
//! of its tasks ahead of the next client's; a turn that answers at most
//! [`PER_CLIENT_PER_TURN`] of each puts at most that many.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};

use super::client::ClientId;
use super::id_hash::IdHash;

/// Most commands of one client served in one turn.
pub(crate) const PER_CLIENT_PER_TURN: usize = 16;

/// Most new connections (of all clients together) taken in one turn.
pub(crate) const NEW_CONNECTIONS_PER_TURN: usize = 8;

/// Most connections an accept loop takes in a row before it yields to the connections
/// already open: a burst of new connections is taken in slices, between which established
/// sessions are served.
pub(crate) const ACCEPTS_PER_TURN: usize = 8;

/// A client as the queue keys it: the client with its hash, computed once (by
/// [`FairQueue::key`], with a randomly keyed SipHash, since a peer has a say in its client id)
/// and then reused for every command, where hashing the id again cost more than the rest of
/// the queue's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ClientKey {
    hash: u64,
    client: ClientId,
}

impl ClientKey {
    /// The client keyed.
    pub(crate) fn client(&self) -> ClientId {
        self.client
    }
}

impl Hash for ClientKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// Commands waiting for their client's turn.
pub(crate) struct FairQueue<T> {
    /// Each client's waiting commands, oldest first. A client is here only while it has some.
    waiting: HashMap<ClientKey, VecDeque<T>, IdHash>,
    /// The clients with waiting commands, in the order of their next turn.
    ring: VecDeque<ClientKey>,
    /// Commands waiting, over all clients.
    len: usize,
    /// What [`ClientKey`]s hash with.
    hasher: RandomState,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            waiting: HashMap::default(),
            ring: VecDeque::new(),
            len: 0,
            hasher: RandomState::new(),
        }
    }
}

impl<T> FairQueue<T> {
    /// Whether no command waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The key of `client` in this queue (the same for the same client, every time).
    pub(crate) fn key(&self, client: ClientId) -> ClientKey {
        ClientKey {
            hash: self.hasher.hash_one(client),
            client,
        }
    }

    /// Puts `item` behind the waiting commands of `client` (a key of this queue's).
    pub(crate) fn push(&mut self, client: ClientKey, item: T) {
        let queue = self.waiting.entry(client).or_default();
        if queue.is_empty() {
            self.ring.push_back(client);
        }
        queue.push_back(item);
        self.len += 1;
    }

    /// Serves one turn: each client with waiting commands, in ring order, gets up to
    /// [`PER_CLIENT_PER_TURN`] of them served, oldest first; a command for which
    /// `opens_connection` is true is served only while fewer than
    /// [`NEW_CONNECTIONS_PER_TURN`] have been this turn (else its client's turn ends there).
    /// Calls `deferred(client, n)` for each client left with `n` commands for a later turn.
    pub(crate) fn take_turn(
        &mut self,
        mut serve: impl FnMut(T),
        opens_connection: impl Fn(&T) -> bool,
        mut deferred: impl FnMut(ClientKey, usize),
    ) {
        let mut connections_opened = 0;
        for _ in 0..self.ring.len() {
            let Some(client) = self.ring.pop_front() else {
                break;
            };
            let Some(queue) = self.waiting.get_mut(&client) else {
                continue;
            };
            let mut served = 0;
            while served < PER_CLIENT_PER_TURN {
                let Some(next) = queue.front() else { break };
                if opens_connection(next) {
                    if connections_opened == NEW_CONNECTIONS_PER_TURN {
                        break;
                    }
                    connections_opened += 1;
                }
                let Some(item) = queue.pop_front() else { break };
                served += 1;
                serve(item);
            }
            self.len -= served;
            if queue.is_empty() {
                self.waiting.remove(&client);
            } else {
                deferred(client, queue.len());
                self.ring.push_back(client);
            }
        }
        // The clients left keep their order; the next turn starts one further along it, so
        // that no client is always last (and always finds the new-connection budget spent).
        if !self.ring.is_empty() {
            self.ring.rotate_left(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(pid: i32) -> ClientId {
        ClientId::Local {
            uid: 0,
            pid: Some(pid),
        }
    }

    /// Items are (client pid, sequence, opens a connection).
    type Item = (i32, usize, bool);
    /// (client pid, sequence) served, and (client pid, commands left) deferred.
    type Turn = (Vec<(i32, usize)>, Vec<(i32, usize)>);

    fn turn(queue: &mut FairQueue<Item>) -> Turn {
        let mut served = Vec::new();
        let mut deferred = Vec::new();
        queue.take_turn(
            |(pid, sequence, _)| served.push((pid, sequence)),
            |(_, _, opens)| *opens,
            |client, n| match client.client() {
                ClientId::Local { pid: Some(pid), .. } => deferred.push((pid, n)),
                _ => unreachable!(),
            },
        );
        (served, deferred)
    }

    #[test]
    fn a_busy_client_gets_its_share_per_turn_and_a_quiet_one_is_served_in_the_first() {
        let mut queue = FairQueue::default();
        for sequence in 0..100 {
            queue.push(queue.key(client(1)), (1, sequence, false));
        }
        queue.push(queue.key(client(2)), (2, 0, false));
        let (served, deferred) = turn(&mut queue);
        assert_eq!(served.len(), PER_CLIENT_PER_TURN + 1);
        assert!(
            served.contains(&(2, 0)),
            "the quiet client is served this turn"
        );
        assert!(
            served
                .iter()
                .filter(|(pid, _)| *pid == 1)
                .map(|(_, sequence)| *sequence)
                .eq(0..PER_CLIENT_PER_TURN),
            "a client's commands keep their order: {served:?}"
        );
        assert_eq!(deferred, [(1, 100 - PER_CLIENT_PER_TURN)]);
        let mut total = served.len();
        while !queue.is_empty() {
            total += turn(&mut queue).0.len();
        }
        assert_eq!(total, 101, "nothing is lost");
    }

    #[test]
    fn the_first_client_served_rotates_between_turns() {
        let mut queue = FairQueue::default();
        for sequence in 0..40 {
            queue.push(queue.key(client(1)), (1, sequence, false));
            queue.push(queue.key(client(2)), (2, sequence, false));
        }
        let (first, _) = turn(&mut queue);
        let (second, _) = turn(&mut queue);
        assert_eq!(first[0].0, 1);
        assert_eq!(second[0].0, 2);
    }

    #[test]
    fn new_connections_are_taken_a_few_per_turn_over_all_clients() {
        let mut queue = FairQueue::default();
        for sequence in 0..20 {
            queue.push(queue.key(client(1)), (1, sequence, true));
        }
        queue.push(queue.key(client(2)), (2, 0, false));
        queue.push(queue.key(client(3)), (3, 0, true));
        let (served, deferred) = turn(&mut queue);
        let mut expected: Vec<(i32, usize)> =
            (0..NEW_CONNECTIONS_PER_TURN).map(|s| (1, s)).collect();
        expected.push((2, 0));
        assert_eq!(
            served, expected,
            "client 3's connect waits for the next turn"
        );
        assert_eq!(deferred, [(1, 20 - NEW_CONNECTIONS_PER_TURN), (3, 1)]);
        let (next, _) = turn(&mut queue);
        assert!(next.contains(&(3, 0)));
    }
}
