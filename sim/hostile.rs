//! A hostile client beside well-behaved RPC pairs (issue 19), and the checker that the pairs
//! do not notice it.
//!
//! A hostile seed (`hostile_seeds` in `sim/main.rs`, replayed with `SIM_HOSTILE_SEED=n`)
//! runs the real switch with three RPC pairs, each a hand-written server and caller on a
//! service queue of its own on a host of its own (the third pair starts [`LATE_START`] into
//! the run, as a service restarting on a busy host does), and one hostile host that, from
//! the start to the end, does one of:
//!
//! - [`Attack::Churn`]: connections that connect, log in, create a transient queue and close,
//!   in a loop, beside a hoarder that opens as many connections as the switch lets it and
//!   keeps them;
//! - [`Attack::Flood`]: connections that send to one queue nobody reads as fast as replies
//!   come back, never backing off;
//! - [`Attack::Transfers`]: connections that hammer Transfers without waiting, over the
//!   pairs' queues and others, and long polls parked on the pairs' service queues.
//!
//! Virtual time makes CPU free, so what can hold a pair up here is only what the switch lets
//! one client take from the others: room in the store and connections. The switch runs with
//! a small store ([`STORE_BYTES`], its queues at the default quarter of it) and a small
//! connection limit ([`CONNECTIONS_MAX`]) that the pairs need most of, so that only the
//! per-queue byte limit and the per-client connection limit stand between the attack and
//! the pairs. No faults: the bound below is the network's.
//!
//! # The bound (invariant 6)
//!
//! Every link delivers a message within `LATENCY_MAX` (10 ms), and a host sees it at the next
//! tick (1 ms): one hop costs at most `HOP` = 11 ms. A durable switch holds the reply to a
//! change until its sync, which takes `SYNC` (the seed's sync delay) and may have to wait for
//! the sync already running: `2·SYNC` per change. One call of `rpc_caller` is, in sequence:
//! CreatePersistent (2 hops, a change), Send (1 hop to the switch, a change), the server's
//! parked Transfer answered (1 hop), its response Send (1 hop, a change), the caller's parked
//! Transfer answered (1 hop; the caller's own Transfer, sent when the Send's reply came back,
//! arrives no later), the Ack of the response (2 hops, a change): 8 hops and 4 changes. The
//! server may still be acking the pair's previous request (2 hops, a change) and re-issuing
//! its long poll (2 hops) when the request arrives, and the Send's own reply waits for its
//! sync: 4 hops and 1 change more. So
//!
//! ```text
//! CALL_BOUND     = 12·HOP + 10·SYNC                  (132 ms in memory, 162 ms with 3 ms syncs)
//! SETUP          = 11·HOP + 2·SYNC                   (the server's two connects with a login
//!                                                     each, its CreatePersistent, its Transfer)
//! PROGRESS_BOUND = CALL_PAUSE_MAX + SETUP + CALL_BOUND   (653 ms in memory, 689 ms)
//! ```
//!
//! The checker demands that every call of a well-behaved caller started before the stop
//! (less `CALL_BOUND`) got its own reply within `CALL_BOUND`, and that each caller completed
//! a call within `PROGRESS_BOUND` of its start and of its previous call, until the stop. A
//! refused Send, a refused connection, a caller that cannot connect, a reply later than the
//! bound: each is a violation. The pairs' own timeouts (a call gives up after 5 s, a
//! connect after 2 s) are far above the bound, so a call the attack starves is reported as
//! late or failed, not hidden by a retry.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use message_switch::engine;
use message_switch::protocol::{Message, MessageKind, QueueName, Request, TransferRequest};
use message_switch::server::ClientLimits;

use crate::check::{Invariant, Violation};
use crate::conn::SimConn;
use crate::harness::{Durability, Plan, RunResult, LATENCY_MAX, TICK};
use crate::history::{CallResult, Outcome, ReplyData, What};
use crate::limits::Limits;
use crate::rng::SimRng;
use crate::workload::{self, Ctx, HostPlan, RawFeatures, Role, CALL_PAUSE_MAX};

/// What the hostile client does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Connects, logs in, creates a transient queue and closes, in a loop, from several
    /// tasks, while a hoarder opens as many connections as it can and keeps them.
    Churn,
    /// Sends to one queue nobody reads, as fast as the replies come, from several
    /// connections, never backing off from a 429.
    Flood,
    /// Transfers without waiting over the pairs' queues and others, in a loop, and long polls
    /// parked on the pairs' service queues.
    Transfers,
}

/// The switch's store in a hostile seed: small, so that a flood reaches its queue's limit
/// (a quarter of it, the default share) within a second, and would reach the store's.
pub const STORE_BYTES: usize = 64 << 10;
/// Connections one client may hold in a hostile seed.
pub const CLIENT_CONNECTIONS_MAX: usize = 8;
/// Connections the three pairs hold (a server and a caller, two each).
const PAIR_CONNECTIONS: usize = 3 * 4;
/// The switch-wide connection limit of a hostile seed: the pairs', one client's share, and
/// two spare. A client that could take more than its share would lock the late pair out.
pub const CONNECTIONS_MAX: usize = PAIR_CONNECTIONS + CLIENT_CONNECTIONS_MAX + 2;
/// When the third pair starts.
pub const LATE_START: Duration = Duration::from_secs(3);
/// How long a hostile seed runs before its processes are stopped.
const RUN: Duration = Duration::from_secs(10);
/// The queue the flood fills.
const FLOODED_QUEUE: &str = "hostile.flood";
/// Tasks of an attack.
const ATTACKERS: u64 = 4;
/// Connections the hoarder tries to hold.
const HOARD: usize = 2 * CONNECTIONS_MAX;

/// The plan of hostile seed `seed`: the attack is `seed % 3`, and seeds 3–5 of every 6 are
/// durable.
pub fn plan(seed: u64) -> Plan {
    let attack = [Attack::Churn, Attack::Flood, Attack::Transfers][(seed % 3) as usize];
    let durable = (seed / 3) % 2 == 1;
    let pair = |index: usize, late: bool| {
        let service = QueueName::from(format!("svc{index}"));
        let roles = vec![
            Role::RpcServer {
                service: service.clone(),
            },
            Role::RpcCaller {
                services: vec![service],
            },
        ];
        HostPlan {
            name: format!("p{index}"),
            roles: if late {
                roles
                    .into_iter()
                    .map(|role| Role::Late {
                        after: LATE_START,
                        role: Box::new(role),
                    })
                    .collect()
            } else {
                roles
            },
        }
    };
    let hosts = vec![
        pair(0, false),
        pair(1, false),
        pair(2, true),
        HostPlan {
            name: "h0".into(),
            roles: vec![Role::Hostile(attack)],
        },
    ];
    let mut limits = Limits::defaults();
    limits.engine = engine::Config {
        stored_bytes_max: STORE_BYTES,
        queue_bytes_max: engine::default_queue_bytes_max(STORE_BYTES),
        ..limits.engine
    };
    limits.connections_max = CONNECTIONS_MAX;
    limits.client_limits = ClientLimits {
        connections_max: CLIENT_CONNECTIONS_MAX,
        ..ClientLimits::default()
    };
    Plan {
        seed,
        hosts,
        features: RawFeatures {
            transient: false,
            destroy: false,
            ack: false,
            skip_login: false,
            reconnect: false,
            long_polls: false,
        },
        faults: Vec::new(),
        heal_us: 0,
        stop_us: RUN.as_micros() as u64,
        latency_max_us: LATENCY_MAX.as_micros() as u64,
        durability: durable.then_some(Durability {
            sync_delay: Duration::from_millis(3),
            compaction_bytes_min: Some(8 << 10),
            // Strict: what isolates the pairs does not depend on when an Ack is answered,
            // and the ordinary durable seeds already draw both modes.
            ack_sync: engine::AckSync::Strict,
        }),
        limits: Some(limits),
    }
}

/// The attack of the hostile host.
pub fn attack_of(plan: &Plan) -> Option<Attack> {
    plan.hosts
        .iter()
        .flat_map(|h| &h.roles)
        .find_map(|role| match role {
            Role::Hostile(attack) => Some(*attack),
            _ => None,
        })
}

/// The bounds of invariant 6 for `plan` (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The longest one call of a well-behaved caller may take (µs).
    pub call_us: u64,
    /// The longest a well-behaved caller may go without completing a call (µs).
    pub progress_us: u64,
}

/// The bounds for `plan`'s network latency and sync delay.
pub fn bound(plan: &Plan) -> Bound {
    let hop = (plan.latency_max_us + TICK.as_micros() as u64) as u128;
    let sync = plan
        .durability
        .map_or(0, |durability| durability.sync_delay.as_micros());
    let call = 12 * hop + 10 * sync;
    let setup = 11 * hop + 2 * sync;
    Bound {
        call_us: call as u64,
        progress_us: (CALL_PAUSE_MAX.as_micros() + setup + call) as u64,
    }
}

/// Invariant 6: every well-behaved caller of `run` completed each of its calls within the
/// call bound, and a call within the progress bound of its start and of its previous call,
/// until the stop.
pub fn check(run: &RunResult) -> Vec<Violation> {
    let plan = &run.plan;
    let bound = bound(plan);
    let mut violations = Vec::new();
    let mut violation = |what: String| {
        violations.push(Violation {
            invariant: Invariant::Isolation,
            what,
        })
    };
    for (actor, started) in callers(plan) {
        let calls = calls_of(run, &actor);
        let mut last_done = started;
        for call in &calls {
            if call.start_us + bound.call_us > plan.stop_us {
                break;
            }
            match &call.end {
                Some((end, CallResult::Replied(_))) if end - call.start_us <= bound.call_us => {}
                Some((end, result)) => violation(format!(
                    "{actor}'s call {} started at {}us ended {}us later with {result:?} \
                     (bound {}us)",
                    call.call,
                    call.start_us,
                    end - call.start_us,
                    bound.call_us
                )),
                None => violation(format!(
                    "{actor}'s call {} started at {}us never ended",
                    call.call, call.start_us
                )),
            }
            if let Some((end, CallResult::Replied(_))) = &call.end {
                if end - last_done > bound.progress_us {
                    violation(format!(
                        "{actor} completed no call from {last_done}us to {end}us (bound {}us)",
                        bound.progress_us
                    ));
                }
                last_done = *end;
            }
        }
        if plan.stop_us.saturating_sub(last_done) > bound.progress_us {
            violation(format!(
                "{actor} completed no call from {last_done}us to the stop at {}us (bound {}us; \
                 {} calls in all)",
                plan.stop_us,
                bound.progress_us,
                calls.len()
            ));
        }
    }
    violations
}

/// One summary line of a hostile run: the attack, what it did, the pairs' slowest call.
pub fn summary(run: &RunResult) -> String {
    let bound = bound(&run.plan);
    let mut pair_calls = 0;
    let mut slowest = 0;
    for (actor, _) in callers(&run.plan) {
        for call in calls_of(run, &actor) {
            pair_calls += 1;
            if let Some((end, _)) = call.end {
                slowest = slowest.max(end - call.start_us);
            }
        }
    }
    let mut hostile_requests = 0;
    let mut hostile_refused = 0;
    let mut hostile_ops = std::collections::BTreeSet::new();
    for event in &run.events {
        match &event.what {
            What::Invoke { op, actor, .. } if actor.starts_with("h0.") => {
                hostile_requests += 1;
                hostile_ops.insert(*op);
            }
            What::Complete {
                op,
                outcome: Outcome::Status(429, _),
            } if hostile_ops.contains(op) => hostile_refused += 1,
            _ => {}
        }
    }
    format!(
        "hostile seed {}: {:?}, {}, {pair_calls} pair calls, slowest {:.1} ms (bound {:.1} ms, \
         progress {:.1} ms); the hostile client made {hostile_requests} requests, \
         {hostile_refused} refused with 429",
        run.plan.seed,
        attack_of(&run.plan),
        if run.plan.durability.is_some() {
            "durable"
        } else {
            "in-memory"
        },
        slowest as f64 / 1e3,
        bound.call_us as f64 / 1e3,
        bound.progress_us as f64 / 1e3,
    )
}

/// The well-behaved callers of `plan` (actor name, start in µs): the first incarnation of
/// each pair host (no host crashes in a hostile seed).
fn callers(plan: &Plan) -> Vec<(String, u64)> {
    let mut callers = Vec::new();
    for host in &plan.hosts {
        for (index, role) in host.roles.iter().enumerate() {
            let (started, role) = match role {
                Role::Late { after, role } => (after.as_micros() as u64, role.as_ref()),
                role => (0, role),
            };
            if matches!(role, Role::RpcCaller { .. }) {
                callers.push((format!("{}.1/{index}", host.name), started));
            }
        }
    }
    callers
}

struct Call {
    call: u64,
    start_us: u64,
    end: Option<(u64, CallResult)>,
}

fn calls_of(run: &RunResult, actor: &str) -> Vec<Call> {
    let mut calls: Vec<Call> = Vec::new();
    for event in &run.events {
        match &event.what {
            What::CallStart {
                call, actor: who, ..
            } if who == actor => calls.push(Call {
                call: *call,
                start_us: event.t_us,
                end: None,
            }),
            What::CallEnd { call, result } => {
                if let Some(entry) = calls.iter_mut().find(|c| c.call == *call) {
                    entry.end = Some((event.t_us, result.clone()));
                }
            }
            _ => {}
        }
    }
    calls
}

/// Runs `attack` until the process is stopped.
pub async fn attack(ctx: Ctx, actor: Rc<str>, attack: Attack, mut rng: SimRng) {
    let mut tasks = JoinSet::new();
    for index in 0..ATTACKERS {
        let ctx = ctx.clone();
        let actor: Rc<str> = format!("{actor}.{index}").into();
        let rng = rng.fork(index);
        tasks.spawn_local(async move {
            match attack {
                Attack::Churn => churn(ctx, actor).await,
                Attack::Flood => flood(ctx, actor, rng).await,
                Attack::Transfers => transfers(ctx, actor, rng).await,
            }
        });
    }
    if attack == Attack::Churn {
        let ctx = ctx.clone();
        let actor: Rc<str> = format!("{actor}.hoard").into();
        tasks.spawn_local(async move { hoard(ctx, actor).await });
    }
    while tasks.join_next().await.is_some() {}
}

/// A moment between a failed connect and the next: a hostile client does not back off, but
/// a connect that fails at once must not spin within one instant of virtual time.
const RETRY: Duration = Duration::from_millis(1);

async fn churn(ctx: Ctx, actor: Rc<str>) {
    loop {
        if let Some(mut conn) = workload::connect(&ctx, &actor, true).await {
            let _ = conn.exec(Request::CreateTransient(None)).await;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Opens connections and keeps them, up to [`HOARD`], replacing those the switch closes.
async fn hoard(ctx: Ctx, actor: Rc<str>) {
    let mut held: Vec<SimConn> = Vec::new();
    loop {
        held.retain(|conn| !conn.is_broken());
        if held.len() < HOARD {
            if let Some(mut conn) = workload::connect(&ctx, &actor, true).await {
                // A connection the switch refused is closed by it: only keep one it serves.
                if matches!(
                    conn.exec(Request::List {
                        prefix: QueueName::from("hostile."),
                        alive_only: false
                    })
                    .await,
                    Outcome::Ok(_)
                ) {
                    held.push(conn);
                }
            }
            tokio::time::sleep(RETRY).await;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn flood(ctx: Ctx, actor: Rc<str>, mut rng: SimRng) {
    let queue = QueueName::from(FLOODED_QUEUE);
    let mut sent = 0u64;
    loop {
        let Some(mut conn) = workload::connect(&ctx, &actor, true).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        if !matches!(
            conn.exec(Request::CreatePersistent(queue.clone())).await,
            Outcome::Ok(_)
        ) {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        while !conn.is_broken() {
            sent += 1;
            // Unique payloads (the checkers tie messages to their Sends), 64 B to 1 KiB.
            let mut payload = format!("{actor}#{sent}:").into_bytes();
            payload.resize(rng.range(64, 1024) as usize, b'f');
            let _ = conn
                .exec(Request::Send {
                    queue: queue.clone(),
                    message: Message {
                        payload: Bytes::from(payload),
                        kind: MessageKind::Request {
                            reply_to: queue.clone(),
                        },
                    },
                })
                .await;
        }
    }
}

/// Half the tasks hammer Transfers that never wait; the other half park long polls on the
/// pairs' service queues, following `next` as a listener does (never acking).
async fn transfers(ctx: Ctx, actor: Rc<str>, mut rng: SimRng) {
    let names: Vec<QueueName> = ["svc0", "svc1", "svc2", "hostile.none"]
        .into_iter()
        .map(QueueName::from)
        .chain((0..3).map(|pair| QueueName::from(format!("p{pair}.1/1.rq"))))
        .collect();
    let parker = rng.chance(0.5);
    let mut cursor = None;
    loop {
        let Some(mut conn) = workload::connect(&ctx, &actor, true).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        while !conn.is_broken() {
            // Distinct names: a name given twice is answered twice over (as the original
            // does), which the Transfer checker does not model.
            let mut queues: Vec<QueueName> = Vec::new();
            for _ in 0..rng.range(1, 4) {
                let name = rng.pick(&names).clone();
                if !queues.contains(&name) {
                    queues.push(name);
                }
            }
            let (from, timeout_s) = if parker {
                (cursor, rng.range(1, 5) as f64)
            } else {
                (rng.chance(0.5).then(|| rng.next() as i64 >> 1), 0.0)
            };
            let outcome = conn
                .exec(Request::Transfer(TransferRequest {
                    from,
                    timeout_s,
                    queues,
                }))
                .await;
            if let Outcome::Ok(ReplyData::Transfer(reply)) = outcome {
                if parker {
                    cursor = Some(reply.next);
                }
            }
        }
    }
}
