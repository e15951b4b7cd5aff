//! Per-client connection limits, checked when a connection is accepted: how many connections
//! one client ([`ClientId`]) may have open, and how fast it may open new ones.
//!
//! The rate is a token bucket kept as its "theoretical arrival time" (GCRA): a client may open
//! `burst` connections at once and then `rate` per second. A connection that comes before its
//! token is **held back**: it is accepted, but not read, until its token is due, so that a
//! client reconnecting in a loop is slowed to the rate without being told anything and
//! without the switch spending work on it meanwhile. One whose token is more than
//! [`HOLD_MAX`] away is **refused**, like one over the count limit: it gets 429 with a
//! one-line reason and is closed.
//!
//! Every decision is counted per client, for `/metrics` and the console, so that an operator
//! sees at once which client is held back or refused and why. The table is bounded: clients
//! with nothing open are forgotten, oldest first, beyond [`CLIENTS_REMEMBERED_MAX`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::client::ClientId;

/// The longest a connection is held back for its rate token before it is refused instead.
pub(crate) const HOLD_MAX: Duration = Duration::from_secs(1);

/// Clients kept in the table once they have nothing open (their counters stay visible until
/// then); beyond it, the least recently seen of those are forgotten.
pub(crate) const CLIENTS_REMEMBERED_MAX: usize = 1024;

/// At most one log line about refused connections per this interval.
pub(crate) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The per-client limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClientLimits {
    /// Most connections one client may have open at once; the next get 429.
    pub connections_max: usize,
    /// New connections per second one client may sustain; faster ones are held back, then
    /// refused. 0: no limit.
    pub connects_per_second: f64,
    /// New connections one client may open at once before the rate applies (at least 1).
    pub connect_burst: u32,
}

impl Default for ClientLimits {
    /// Far above what the toolstack does: each of its services opens a handful of
    /// connections when it starts and keeps them.
    fn default() -> Self {
        Self {
            connections_max: 1000,
            connects_per_second: 100.0,
            connect_burst: 200,
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client had `connections_max` open already.
    TooManyOpen,
    /// The client's next token was more than [`HOLD_MAX`] away.
    TooFast,
}

impl Refusal {
    /// The `reason` label of the refusal counter.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::TooManyOpen => "connections",
            Refusal::TooFast => "rate",
        }
    }

    /// The 429's one-line body.
    pub(crate) fn message(self, client: ClientId, limits: &ClientLimits) -> String {
        match self {
            Refusal::TooManyOpen => format!(
                "too many open connections from this client ({client}; limit {})",
                limits.connections_max
            ),
            Refusal::TooFast => format!(
                "this client ({client}) opens connections too fast (limit {} per second, burst {})",
                limits.connects_per_second, limits.connect_burst
            ),
        }
    }
}

/// The verdict on one accepted connection.
pub(crate) enum Admit {
    /// Serve it, after waiting `hold` (zero if its token was there). The ticket counts it as
    /// open for its client until dropped.
    Serve { ticket: Ticket, hold: Duration },
    /// Refuse it: answer 429 and close. `log` is the count of refusals to report in a log
    /// line now (this one included), if one is due: at most one line per
    /// [`REFUSAL_LOG_INTERVAL`].
    Refuse { refusal: Refusal, log: Option<u64> },
}

/// One open connection of a client; dropping it closes it in the count.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    client: ClientId,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if let Some(entry) = state.clients.get_mut(&self.client) {
            entry.counts.open = entry.counts.open.saturating_sub(1);
        }
    }
}

/// What one client has done, as counted since it was first seen (or remembered).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ClientCounts {
    /// Connections open now.
    pub(crate) open: usize,
    /// Connections accepted and served (held back ones included).
    pub(crate) accepted: u64,
    /// Connections held back for the rate limit.
    pub(crate) held: u64,
    /// Total time connections were held back.
    pub(crate) held_time: Duration,
    /// Connections refused: over the count limit, and too fast.
    pub(crate) refused_open: u64,
    pub(crate) refused_rate: u64,
    /// Driver turns that ended this client's share with commands of its still waiting
    /// (`fairness`): it had more work than its share while others had some too.
    pub(crate) turns_cut_short: u64,
    /// Refusals held back because this client's connection kept being refused
    /// (`refusal_backoff`), and their total hold.
    pub(crate) refusals_held: u64,
    pub(crate) refusals_held_time: Duration,
}

impl ClientCounts {
    /// Refusals of both kinds.
    pub(crate) fn refused(&self) -> u64 {
        self.refused_open + self.refused_rate
    }

    /// How much the limits and the fair scheduling have held this client back: what the
    /// views rank clients by.
    pub(crate) fn trouble(&self) -> (u64, u64, u64) {
        (
            self.refused() + self.refusals_held,
            self.held,
            self.turns_cut_short,
        )
    }
}

#[derive(Debug)]
struct Entry {
    counts: ClientCounts,
    /// When the rate's bucket would be full again (GCRA's theoretical arrival time).
    next_due: Instant,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<ClientId, Entry>,
    /// When refusals were last logged, and how many came since.
    logged_at: Option<Instant>,
    unlogged: u64,
}

impl State {
    fn refused(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .logged_at
            .is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The table of clients and their counts, shared by the accept loops and connection tasks.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: ClientLimits,
    state: Mutex<State>,
}

impl Admission {
    pub(crate) fn new(limits: ClientLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// The limits this table enforces.
    pub(crate) fn limits(&self) -> &ClientLimits {
        &self.limits
    }

    /// Decides on a connection of `client` accepted at `now`, and counts the decision.
    pub(crate) fn admit(self: &Arc<Self>, client: ClientId, now: Instant) -> Admit {
        let limits = self.limits;
        let mut state = self.lock();
        if state.clients.len() >= CLIENTS_REMEMBERED_MAX && !state.clients.contains_key(&client) {
            forget_idle_clients(&mut state.clients);
        }
        let entry = state.clients.entry(client).or_insert_with(|| Entry {
            counts: ClientCounts::default(),
            next_due: now,
            last_seen: now,
        });
        entry.last_seen = now;
        if entry.counts.open >= limits.connections_max {
            entry.counts.refused_open += 1;
            let log = state.refused(now);
            return Admit::Refuse {
                refusal: Refusal::TooManyOpen,
                log,
            };
        }
        let mut hold = Duration::ZERO;
        if limits.connects_per_second > 0.0 {
            let interval = Duration::from_secs_f64(1.0 / limits.connects_per_second);
            let tolerance = interval.saturating_mul(limits.connect_burst.max(1) - 1);
            let due = entry.next_due.max(now);
            // This connection's token comes `tolerance` before the bucket is full again.
            let allowed_at = due.checked_sub(tolerance).unwrap_or(now).max(now);
            hold = allowed_at - now;
            if hold > HOLD_MAX {
                entry.counts.refused_rate += 1;
                let log = state.refused(now);
                return Admit::Refuse {
                    refusal: Refusal::TooFast,
                    log,
                };
            }
            entry.next_due = due + interval;
            if !hold.is_zero() {
                entry.counts.held += 1;
                entry.counts.held_time += hold;
            }
        }
        entry.counts.open += 1;
        entry.counts.accepted += 1;
        drop(state);
        Admit::Serve {
            ticket: Ticket {
                admission: self.clone(),
                client,
            },
            hold,
        }
    }

    /// Counts one turn cut short for each of `clients` (the driver's fair scheduling).
    pub(crate) fn count_turns_cut_short(&self, clients: &[ClientId]) {
        let mut state = self.lock();
        for client in clients {
            if let Some(entry) = state.clients.get_mut(client) {
                entry.counts.turns_cut_short += 1;
            }
        }
    }

    /// Counts one refusal of `client`'s held back for `delay` (`refusal_backoff`).
    pub(crate) fn count_refusal_held(&self, client: ClientId, delay: Duration) {
        if let Some(entry) = self.lock().clients.get_mut(&client) {
            entry.counts.refusals_held += 1;
            entry.counts.refusals_held_time += delay;
        }
    }

    /// Every client remembered, with its counts, in no particular order.
    pub(crate) fn counts(&self) -> Vec<(ClientId, ClientCounts)> {
        self.lock()
            .clients
            .iter()
            .map(|(client, entry)| (*client, entry.counts.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere cannot leave them worse than slightly off.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Forgets the least recently seen half of the clients with nothing open.
fn forget_idle_clients(clients: &mut HashMap<ClientId, Entry>) {
    let mut idle: Vec<(Instant, ClientId)> = clients
        .iter()
        .filter(|(_, entry)| entry.counts.open == 0)
        .map(|(client, entry)| (entry.last_seen, *client))
        .collect();
    idle.sort_unstable();
    for (_, client) in idle.iter().take(idle.len().div_ceil(2)) {
        clients.remove(client);
    }
}

/// The clients most bothered by the limits first (refusals, then holds, then open
/// connections), at most `max` of them: the ones an operator looks for.
pub(crate) fn most_troubled(
    mut clients: Vec<(ClientId, ClientCounts)>,
    max: usize,
) -> Vec<(ClientId, ClientCounts)> {
    clients.sort_by(|(a_id, a), (b_id, b)| {
        (b.trouble(), b.open)
            .cmp(&(a.trouble(), a.open))
            .then(a_id.cmp(b_id))
    });
    clients.truncate(max);
    clients
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: ClientId = ClientId::Local {
        uid: 0,
        pid: Some(1),
    };
    const TWO: ClientId = ClientId::Local {
        uid: 0,
        pid: Some(2),
    };

    fn limits(connections_max: usize, per_second: f64, burst: u32) -> Arc<Admission> {
        Admission::new(ClientLimits {
            connections_max,
            connects_per_second: per_second,
            connect_burst: burst,
        })
    }

    fn hold_of(admit: &Admit) -> Option<Duration> {
        match admit {
            Admit::Serve { hold, .. } => Some(*hold),
            Admit::Refuse { .. } => None,
        }
    }

    #[test]
    fn the_count_limit_refuses_exactly_past_it_and_frees_on_close() {
        let admission = limits(2, 0.0, 1);
        let now = Instant::now();
        let first = admission.admit(ONE, now);
        let second = admission.admit(ONE, now);
        assert!(matches!(
            admission.admit(ONE, now),
            Admit::Refuse {
                refusal: Refusal::TooManyOpen,
                log: Some(1)
            }
        ));
        assert!(
            hold_of(&admission.admit(TWO, now)).is_some(),
            "another client is not counted against this one"
        );
        drop(first);
        let third = admission.admit(ONE, now);
        assert_eq!(hold_of(&third), Some(Duration::ZERO));
        drop(second);
        let counts: HashMap<_, _> = admission.counts().into_iter().collect();
        assert_eq!(counts[&ONE].open, 1);
        assert_eq!(counts[&ONE].accepted, 3);
        assert_eq!(counts[&ONE].refused_open, 1);
        drop(third);
    }

    #[test]
    fn the_burst_is_free_then_connections_are_held_then_refused() {
        // 10 per second, burst 3: three at once, then one every 100 ms; holding is allowed up
        // to HOLD_MAX (1 s), so 10 more are held and the next is refused.
        let admission = limits(1000, 10.0, 3);
        let now = Instant::now();
        let mut tickets = Vec::new();
        for _ in 0..3 {
            let admit = admission.admit(ONE, now);
            assert_eq!(hold_of(&admit), Some(Duration::ZERO));
            tickets.push(admit);
        }
        for expected in 1..=10u32 {
            let admit = admission.admit(ONE, now);
            assert_eq!(hold_of(&admit), Some(Duration::from_millis(100) * expected));
            tickets.push(admit);
        }
        assert!(matches!(
            admission.admit(ONE, now),
            Admit::Refuse {
                refusal: Refusal::TooFast,
                log: Some(1)
            }
        ));
        // Time refills the bucket at the rate.
        let later = now + Duration::from_secs(2);
        assert_eq!(hold_of(&admission.admit(ONE, later)), Some(Duration::ZERO));
        let counts: HashMap<_, _> = admission.counts().into_iter().collect();
        assert_eq!(counts[&ONE].held, 10);
        assert_eq!(counts[&ONE].refused_rate, 1);
        assert_eq!(counts[&ONE].held_time, Duration::from_millis(5500));
    }

    #[test]
    fn the_table_forgets_idle_clients_but_not_open_ones() {
        let admission = limits(10, 0.0, 1);
        let now = Instant::now();
        let kept = admission.admit(ONE, now);
        for pid in 100..100 + CLIENTS_REMEMBERED_MAX as i32 {
            drop(admission.admit(
                ClientId::Local {
                    uid: 0,
                    pid: Some(pid),
                },
                now + Duration::from_millis(1),
            ));
        }
        let counts = admission.counts();
        assert!(counts.len() <= CLIENTS_REMEMBERED_MAX);
        assert!(counts.iter().any(|(client, _)| *client == ONE));
        drop(kept);
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_their_count() {
        let admission = limits(0, 0.0, 1);
        let start = Instant::now();
        let logs: Vec<Option<u64>> = (0..30u32)
            .map(
                |second| match admission.admit(ONE, start + Duration::from_secs(second.into())) {
                    Admit::Refuse { log, .. } => log,
                    Admit::Serve { .. } => panic!("a limit of 0 serves nothing"),
                },
            )
            .collect();
        let logged: Vec<(usize, u64)> = logs
            .iter()
            .enumerate()
            .filter_map(|(second, log)| log.map(|count| (second, count)))
            .collect();
        assert_eq!(logged, [(0, 1), (10, 10), (20, 10)]);
    }

    #[test]
    fn the_most_troubled_client_comes_first() {
        let quiet = ClientCounts {
            open: 5,
            ..ClientCounts::default()
        };
        let refused = ClientCounts {
            refused_rate: 1,
            ..ClientCounts::default()
        };
        let ranked = most_troubled(vec![(ONE, quiet), (TWO, refused)], 1);
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].0, TWO);
    }
}
