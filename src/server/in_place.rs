//! Answering in place: a connection task that finds the driver idle hands its request to
//! the engine itself, under the driver's lock, instead of queueing it for the driver's task
//! and waiting to be woken with the reply.
//!
//! Why: the hop costs an exchange a channel send, a wake-up and a poll of the driver's task,
//! a oneshot, and a second poll of the connection's whole hyper stack when the reply comes
//! back; an immediate reply (a Send, an Ack, a Transfer that finds messages) needs none of
//! them. docs/performance.md ("a fifth pass") has the figures.
//!
//! When: only while nothing waits for a turn, so that no command of another client is
//! overtaken by one answered in place:
//! - the driver's command queue is empty, and its fair queue too (no client's commands are
//!   held for a later turn);
//! - the connection's `Connect` has been taken in (its client is known), so that its
//!   session exists before its first request;
//! - the lock is free at once (with several runtime threads the driver, or another
//!   connection, may hold it: the request then goes the usual way rather than block a
//!   thread);
//! - and, while more than one client is connected, the client has credit left in this
//!   round ([`InPlaceCredits`]): at most [`PER_CLIENT_PER_TURN`] of its requests are
//!   answered in place per round, as the fair queue serves at most that many per turn. A
//!   client with many connections would otherwise get one answer per connection task that
//!   tokio runs. A client alone has nobody to be fair to: every task that could wait
//!   behind its answers is its own.
//!
//! A round ends with each of the driver's turns, or when a connection task whose client
//! had spent its credit has yielded to the runtime and runs again: tokio runs the tasks
//! woken before it first, so every connection that was ready then (another client's
//! included) has been served in between, whatever the driver did. The task then starts the
//! next round (unless one started meanwhile) and tries once more; declined again, it sends
//! its request to the driver. So a client alone keeps its answers in place, at the price of
//! one yield per [`PER_CLIENT_PER_TURN`] requests, and a client beside others waits behind
//! at most that many of each other client's.
//!
//! Everything else is the driver's, as before: connects and disconnects, the operator's
//! commands, timers, the journal's batches and completions. A request answered in place can
//! change what the driver must do next (a parked Transfer with an earlier deadline, a batch
//! for the journal, a store hold); the driver is then woken to do it
//! ([`super::driver`]).

use std::collections::HashMap;

use super::fairness::{ClientKey, PER_CLIENT_PER_TURN};
use super::id_hash::IdHash;

/// How many requests each client has had answered in place in this round, and how many
/// connections each client has open.
#[derive(Default)]
pub(crate) struct InPlaceCredits {
    /// Only clients answered in place in this round are here.
    used: HashMap<ClientKey, usize, IdHash>,
    round: Round,
    /// Open connections per client, for clients with any.
    connections: HashMap<ClientKey, usize, IdHash>,
}

/// A round of [`InPlaceCredits`], as seen by a task whose client had spent its credit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Round(u64);

impl InPlaceCredits {
    /// A connection of `client` opened.
    pub(crate) fn connected(&mut self, client: ClientKey) {
        *self.connections.entry(client).or_insert(0) += 1;
    }

    /// A connection of `client` closed.
    pub(crate) fn disconnected(&mut self, client: ClientKey) {
        if let Some(open) = self.connections.get_mut(&client) {
            *open -= 1;
            if *open == 0 {
                self.connections.remove(&client);
            }
        }
    }

    /// Takes one of `client`'s credits for this round (none is needed while it is the only
    /// client connected); when it has used them all, the round it spent them in.
    pub(crate) fn take(&mut self, client: ClientKey) -> Result<(), Round> {
        if self.connections.len() <= 1 {
            return Ok(());
        }
        let used = self.used.entry(client).or_insert(0);
        if *used >= PER_CLIENT_PER_TURN {
            return Err(self.round);
        }
        *used += 1;
        Ok(())
    }

    /// Starts a new round, in which every client has its full credit again.
    pub(crate) fn new_round(&mut self) {
        self.used.clear();
        self.round.0 += 1;
    }

    /// Starts a new round if `seen` is still the current one (a task that yielded in it has
    /// run again, see the module documentation).
    pub(crate) fn new_round_after(&mut self, seen: Round) {
        if self.round == seen {
            self.new_round();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::client::ClientId;
    use crate::server::fairness::FairQueue;

    fn key(queue: &FairQueue<()>, pid: i32) -> ClientKey {
        queue.key(ClientId::Local {
            uid: 0,
            pid: Some(pid),
        })
    }

    /// Credits with clients 1 and 2 connected.
    fn two_clients(keys: &FairQueue<()>) -> InPlaceCredits {
        let mut credits = InPlaceCredits::default();
        credits.connected(key(keys, 1));
        credits.connected(key(keys, 2));
        credits
    }

    #[test]
    fn a_client_has_a_rounds_share_of_credit_and_others_keep_theirs() {
        let keys = FairQueue::<()>::default();
        let mut credits = two_clients(&keys);
        for _ in 0..PER_CLIENT_PER_TURN {
            assert!(credits.take(key(&keys, 1)).is_ok());
        }
        let spent_in = credits.take(key(&keys, 1));
        assert!(spent_in.is_err(), "the busy client's credit is spent");
        assert!(
            credits.take(key(&keys, 2)).is_ok(),
            "another client's is not"
        );
        credits.new_round();
        assert!(
            credits.take(key(&keys, 1)).is_ok(),
            "a new round gives it back"
        );
    }

    #[test]
    fn of_two_tasks_back_from_a_yield_in_one_round_only_the_first_starts_a_new_one() {
        let keys = FairQueue::<()>::default();
        let mut credits = two_clients(&keys);
        for _ in 0..PER_CLIENT_PER_TURN {
            credits.take(key(&keys, 1)).unwrap();
        }
        let first = credits.take(key(&keys, 1)).unwrap_err();
        let second = credits.take(key(&keys, 1)).unwrap_err();
        assert_eq!(first, second);
        credits.new_round_after(first);
        for _ in 0..PER_CLIENT_PER_TURN {
            credits.take(key(&keys, 1)).unwrap();
        }
        credits.new_round_after(second);
        assert!(
            credits.take(key(&keys, 1)).is_err(),
            "the second task's round had already ended: no credit from it"
        );
    }

    #[test]
    fn a_client_alone_needs_no_credit_until_another_connects_and_again_once_it_leaves() {
        let keys = FairQueue::<()>::default();
        let mut credits = InPlaceCredits::default();
        credits.connected(key(&keys, 1));
        credits.connected(key(&keys, 1));
        for _ in 0..3 * PER_CLIENT_PER_TURN {
            assert!(credits.take(key(&keys, 1)).is_ok(), "alone");
        }
        credits.connected(key(&keys, 2));
        credits.new_round();
        for _ in 0..PER_CLIENT_PER_TURN {
            credits.take(key(&keys, 1)).unwrap();
        }
        assert!(
            credits.take(key(&keys, 1)).is_err(),
            "client 2 is connected"
        );
        credits.disconnected(key(&keys, 1));
        assert!(
            credits.take(key(&keys, 1)).is_err(),
            "client 1 still has a connection, so two clients are"
        );
        credits.disconnected(key(&keys, 2));
        assert!(credits.take(key(&keys, 1)).is_ok(), "alone again");
    }
}
