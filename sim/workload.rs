//! The actors that run on the client hosts, and the per-seed plan that decides which ones run
//! (swarm testing: every seed leaves out a random subset of features).
//!
//! Every actor records each request it makes through [`SimConn`], so the checkers see the
//! whole conversation. Payloads are unique per run (they carry the session token and a
//! counter), which is how the checkers tie a transferred message back to its Send.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;

use message_switch::client::{self, Client, ClientConfig, ConnectionConfig, Jitter, ServeOptions};
use message_switch::protocol::{
    Message, MessageId, MessageKind, QueueName, Request, SessionToken, TransferRequest,
};

use crate::conn::SimConn;
use crate::history::{CallResult, Outcome, Recorder, ReplyData};
use crate::limits::Limits;
use crate::net::{now_us, Net, SimConnector};
use crate::rng::SimRng;

/// How long an RPC caller waits for a reply.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause of an RPC caller between two calls.
pub const CALL_PAUSE_MAX: Duration = Duration::from_millis(400);
/// The longest pause between reconnect attempts.
pub const BACKOFF_MAX: Duration = Duration::from_millis(800);
/// Shared persistent queues the raw actors work on.
pub const RAW_QUEUES: [&str; 2] = ["r0", "r1"];
/// How many distinct long-named persistent queues the raw actors create (with drawn limits),
/// so that they take a bounded share of the queue limit.
pub const LONG_NAMES: usize = 2;

/// The phases of a run. Actors stop when the phase reaches [`Phase::Stop`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Phase {
    /// Workload with faults.
    Chaos,
    /// Faults healed; RPC calls must complete.
    Live,
    /// Actors stop and close their connections.
    Stop,
    /// The janitor destroys what is left.
    Janitor,
}

/// What one task of a client process does.
#[derive(Clone, Debug)]
pub enum Role {
    /// Serves RPCs on a persistent queue.
    RpcServer {
        /// The service queue.
        service: QueueName,
    },
    /// Calls RPC services.
    RpcCaller {
        /// The services it calls.
        services: Vec<QueueName>,
    },
    /// Sends arbitrary protocol requests over one connection of the process's session.
    Raw,
    /// Serves RPCs with the client library's `serve`.
    LibServer {
        /// The service queue.
        service: QueueName,
    },
    /// Calls RPC services with the client library's `Client`.
    LibCaller {
        /// The services it calls.
        services: Vec<QueueName>,
    },
    /// Long-polls both shared raw queues with one cursor, following each reply's `next` as
    /// every listener does, and acks some of what it gets (issue 12).
    Listener,
    /// A client that misbehaves (issue 19, `sim/hostile.rs`).
    Hostile(crate::hostile::Attack),
    /// `role`, started `after` the process starts (a service that comes up late).
    Late {
        /// How long after the process's start.
        after: Duration,
        /// What it then does.
        role: Box<Role>,
    },
}

/// Which optional behaviours the raw actors use in this seed.
#[derive(Clone, Debug)]
pub struct RawFeatures {
    /// Create and use transient queues.
    pub transient: bool,
    /// Destroy queues.
    pub destroy: bool,
    /// Ack messages.
    pub ack: bool,
    /// Sometimes skip the login (and get 404).
    pub skip_login: bool,
    /// Close and reopen connections.
    pub reconnect: bool,
    /// Transfers with long timeouts (blocked transfers).
    pub long_polls: bool,
}

/// Everything about one client process's host.
#[derive(Clone, Debug)]
pub struct HostPlan {
    /// The host's name.
    pub name: String,
    /// Its tasks; all share one session token per incarnation.
    pub roles: Vec<Role>,
}

/// The context of one process incarnation on a client host.
#[derive(Clone)]
pub struct Ctx {
    /// The network registry.
    pub net: Arc<Net>,
    /// The history.
    pub recorder: Rc<Recorder>,
    /// The host name.
    pub host: String,
    /// The session token of this incarnation (unique, like `prog:pid`).
    pub token: String,
    /// Raw-actor features of this seed.
    pub features: Rc<RawFeatures>,
    /// The seed's drawn limits, which the raw actors aim at; `None` with the defaults.
    pub limits: Option<Rc<Limits>>,
    /// The phase of the run.
    pub phase: watch::Receiver<Phase>,
}

/// Runs one incarnation of a client process until the phase reaches [`Phase::Stop`].
pub async fn run_process(
    ctx: Ctx,
    roles: Vec<Role>,
    mut rng: SimRng,
    mut phase: watch::Receiver<Phase>,
) -> turmoil::Result {
    let mut tasks = JoinSet::new();
    for (index, role) in roles.into_iter().enumerate() {
        let ctx = ctx.clone();
        let rng = rng.fork(index as u64);
        let actor: Rc<str> = format!("{}/{index}", ctx.token).into();
        tasks.spawn_local(async move {
            let role = match role {
                Role::Late { after, role } => {
                    tokio::time::sleep(after).await;
                    *role
                }
                role => role,
            };
            match role {
                Role::RpcServer { service } => rpc_server(ctx, actor, service, rng).await,
                Role::RpcCaller { services } => rpc_caller(ctx, actor, services, rng).await,
                Role::Raw => raw_actor(ctx, actor, rng).await,
                Role::LibServer { service } => lib_server(ctx, actor, service, rng).await,
                Role::LibCaller { services } => lib_caller(ctx, actor, services, rng).await,
                Role::Listener => listener(ctx, actor, rng).await,
                Role::Hostile(attack) => crate::hostile::attack(ctx, actor, attack, rng).await,
                // One level of lateness is all a plan uses.
                Role::Late { .. } => {}
            }
        });
    }
    let _ = phase.wait_for(|p| *p >= Phase::Stop).await;
    // Stopping is a process exit: every task (and so every connection) is dropped.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    // Let hyper's connection tasks notice their handles are gone and close the streams.
    for _ in 0..50 {
        if turmoil::established_tcp_stream_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Opens a connection and logs in with the context's token.
pub(crate) async fn connect(ctx: &Ctx, actor: &Rc<str>, login: bool) -> Option<SimConn> {
    let mut conn = SimConn::open(&ctx.net, &ctx.host, actor.clone(), ctx.recorder.clone())
        .await
        .ok()?;
    if login {
        let token = SessionToken::from(ctx.token.as_str());
        if !matches!(conn.exec(Request::Login(token)).await, Outcome::Ok(_)) {
            return None;
        }
    }
    Some(conn)
}

async fn backoff(delay: &mut Duration) {
    tokio::time::sleep(*delay).await;
    *delay = (*delay * 2).min(BACKOFF_MAX);
}

/// An RPC server in the style of the OCaml `Server.listen`, with the fixes the Rust client
/// makes: it re-creates its queue after every reconnect and keeps its cursor (ids only grow).
async fn rpc_server(ctx: Ctx, actor: Rc<str>, service: QueueName, mut rng: SimRng) {
    let mut cursor: Option<i64> = None;
    let mut delay = Duration::from_millis(100);
    let mut served = 0u64;
    loop {
        let (Some(mut requests), Some(mut replies)) = (
            connect(&ctx, &actor, true).await,
            connect(&ctx, &actor, true).await,
        ) else {
            backoff(&mut delay).await;
            continue;
        };
        if !matches!(
            requests
                .exec(Request::CreatePersistent(service.clone()))
                .await,
            Outcome::Ok(_)
        ) {
            backoff(&mut delay).await;
            continue;
        }
        delay = Duration::from_millis(100);
        'serve: loop {
            let timeout_s = rng.range(1, 8) as f64;
            let outcome = requests
                .exec(Request::Transfer(TransferRequest {
                    from: cursor,
                    timeout_s,
                    queues: vec![service.clone()],
                }))
                .await;
            let Outcome::Ok(ReplyData::Transfer(reply)) = outcome else {
                break 'serve;
            };
            for (id, message) in reply.messages {
                if let MessageKind::Request { reply_to } = &message.kind {
                    served += 1;
                    let mut payload = b"re:".to_vec();
                    payload.extend_from_slice(&message.payload);
                    payload.extend_from_slice(format!("|{actor}#{served}").as_bytes());
                    let response = Request::Send {
                        queue: reply_to.clone(),
                        message: Message {
                            payload: Bytes::from(payload),
                            kind: MessageKind::Response {
                                request: id.clone(),
                            },
                        },
                    };
                    if matches!(replies.exec(response).await, Outcome::Transport(_)) {
                        break 'serve;
                    }
                }
                if matches!(replies.exec(Request::Ack(id)).await, Outcome::Transport(_)) {
                    break 'serve;
                }
            }
            cursor = Some(reply.next);
        }
        backoff(&mut delay).await;
    }
}

/// An RPC caller in the style of the OCaml client: two connections, a transient reply queue
/// per caller task, CreatePersistent before every call, and responses matched
/// to calls by the request's id.
async fn rpc_caller(ctx: Ctx, actor: Rc<str>, services: Vec<QueueName>, mut rng: SimRng) {
    // One reply queue per caller task (owned by the process's session): callers sharing a
    // queue would ack each other's responses.
    let reply_queue = QueueName::from(format!("{actor}.rq"));
    let mut cursor: Option<i64> = None;
    let mut delay = Duration::from_millis(100);
    let mut calls = 0u64;
    let mut conns: Option<(SimConn, SimConn)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(
            rng.below(CALL_PAUSE_MAX.as_millis() as u64),
        ))
        .await;
        if conns
            .as_ref()
            .is_none_or(|(r, e)| r.is_broken() || e.is_broken())
        {
            conns = None;
            let (Some(mut r), Some(e)) = (
                connect(&ctx, &actor, true).await,
                connect(&ctx, &actor, true).await,
            ) else {
                backoff(&mut delay).await;
                continue;
            };
            if !matches!(
                r.exec(Request::CreateTransient(Some(reply_queue.clone())))
                    .await,
                Outcome::Ok(_)
            ) {
                backoff(&mut delay).await;
                continue;
            }
            delay = Duration::from_millis(100);
            conns = Some((r, e));
        }
        let Some((requests, events)) = conns.as_mut() else {
            continue;
        };
        calls += 1;
        let service = rng.pick(&services).clone();
        let payload = Bytes::from(format!("{actor}/call{calls}"));
        let call = ctx
            .recorder
            .call_start(&actor, service.clone(), payload.clone());
        let result = call_once(
            requests,
            events,
            &service,
            &reply_queue,
            payload,
            &mut cursor,
        )
        .await;
        ctx.recorder.call_end(call, result);
    }
}

async fn call_once(
    requests: &mut SimConn,
    events: &mut SimConn,
    service: &QueueName,
    reply_queue: &QueueName,
    payload: Bytes,
    cursor: &mut Option<i64>,
) -> CallResult {
    if let Outcome::Transport(error) = requests
        .exec(Request::CreatePersistent(service.clone()))
        .await
    {
        return CallResult::Failed(error);
    }
    let sent = requests
        .exec(Request::Send {
            queue: service.clone(),
            message: Message {
                payload,
                kind: MessageKind::Request {
                    reply_to: reply_queue.clone(),
                },
            },
        })
        .await;
    let id = match sent {
        Outcome::Ok(ReplyData::Sent(Some(id))) => id,
        Outcome::Ok(ReplyData::Sent(None)) => return CallResult::QueueDeleted,
        other => return CallResult::Failed(format!("{other:?}")),
    };
    let deadline = now_us() + CALL_TIMEOUT.as_micros() as u64;
    loop {
        let now = now_us();
        if now >= deadline {
            return CallResult::TimedOut;
        }
        let wait = Duration::from_micros(deadline - now).min(Duration::from_secs(2));
        let outcome = events
            .exec(Request::Transfer(TransferRequest {
                from: *cursor,
                timeout_s: wait.as_secs_f64(),
                queues: vec![reply_queue.clone()],
            }))
            .await;
        let Outcome::Ok(ReplyData::Transfer(reply)) = outcome else {
            return CallResult::Failed(format!("{outcome:?}"));
        };
        let mut answer = None;
        for (response_id, message) in reply.messages {
            if let MessageKind::Response { request } = &message.kind {
                if *request == id && answer.is_none() {
                    answer = Some(message.payload.clone());
                }
            }
            // Stale responses (of calls that timed out) are acked and dropped.
            let _ = events.exec(Request::Ack(response_id)).await;
        }
        *cursor = Some(reply.next);
        if let Some(answer) = answer {
            return CallResult::Replied(answer);
        }
    }
}

/// The client library's settings in the simulation: short timeouts so that lost connections
/// are noticed within the run, a unique token per role (a client's reply queue is named after
/// it), and back-off jitter drawn from the run's random numbers, so that a seed replays.
fn lib_config(token: &str, rng: &mut SimRng) -> ClientConfig {
    ClientConfig {
        token: SessionToken::from(token),
        connection: ConnectionConfig {
            connect_timeout: crate::conn::CONNECT_TIMEOUT,
            request_timeout: crate::conn::REQUEST_SLACK,
            ..ConnectionConfig::default()
        },
        transfer_timeout: Duration::from_secs(5),
        reconnect_delay_min: Duration::from_millis(100),
        reconnect_delay_max: BACKOFF_MAX,
        jitter: Jitter::seeded(rng.next()),
    }
}

/// An RPC server built on the client library's `serve`.
async fn lib_server(ctx: Ctx, actor: Rc<str>, service: QueueName, mut rng: SimRng) {
    let connector = SimConnector {
        net: ctx.net.clone(),
        host: ctx.host.clone(),
    };
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let name: Arc<str> = actor.to_string().into();
    let mut delay = Duration::from_millis(100);
    loop {
        let served = served.clone();
        let name = name.clone();
        let options = ServeOptions {
            config: lib_config(&format!("{actor}.lib"), &mut rng),
            ..ServeOptions::default()
        };
        // `serve` returns only if its very first connection fails.
        let _ = client::serve(
            connector.clone(),
            service.clone(),
            options,
            move |incoming| {
                let n = served.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let mut payload = b"re:".to_vec();
                payload.extend_from_slice(&incoming.payload);
                payload.extend_from_slice(format!("|{name}#{n}").as_bytes());
                async move { Bytes::from(payload) }
            },
        )
        .await;
        backoff(&mut delay).await;
    }
}

/// An RPC caller built on the client library's `Client`.
async fn lib_caller(ctx: Ctx, actor: Rc<str>, services: Vec<QueueName>, mut rng: SimRng) {
    let connector = SimConnector {
        net: ctx.net.clone(),
        host: ctx.host.clone(),
    };
    let mut delay = Duration::from_millis(100);
    let client = loop {
        let config = lib_config(&format!("{actor}.lib"), &mut rng);
        match Client::connect(connector.clone(), config).await {
            Ok(client) => break client,
            Err(_) => backoff(&mut delay).await,
        }
    };
    // Several calls at once on one client, so that responses must find their own waiter.
    let mut callers = JoinSet::new();
    for lane in 0..rng.range(1, 3) {
        let (ctx, client, services) = (ctx.clone(), client.clone(), services.clone());
        let actor: Rc<str> = format!("{actor}.{lane}").into();
        let mut rng = rng.fork(lane);
        callers.spawn_local(async move {
            let mut calls = 0u64;
            loop {
                tokio::time::sleep(Duration::from_millis(
                    rng.below(CALL_PAUSE_MAX.as_millis() as u64),
                ))
                .await;
                calls += 1;
                let service = rng.pick(&services).clone();
                let payload = Bytes::from(format!("{actor}/call{calls}"));
                let call = ctx
                    .recorder
                    .call_start(&actor, service.clone(), payload.clone());
                let result = match client.call(&service, payload, Some(CALL_TIMEOUT)).await {
                    Ok(reply) => CallResult::Replied(reply),
                    Err(client::Error::CallTimedOut { .. }) => CallResult::TimedOut,
                    Err(client::Error::QueueDeleted(_)) => CallResult::QueueDeleted,
                    Err(error) => CallResult::Failed(error.to_string()),
                };
                ctx.recorder.call_end(call, result);
            }
        });
    }
    while callers.join_next().await.is_some() {}
}

/// What a raw actor remembers about the queues it has seen.
#[derive(Default)]
struct RawMemory {
    /// Queue names worth talking to.
    queues: Vec<QueueName>,
    /// Ids seen per queue (from sends and transfers), for acks and cursors.
    ids: BTreeMap<QueueName, Vec<i64>>,
    /// The last `next` per queue list.
    cursors: BTreeMap<Vec<QueueName>, i64>,
    sends: u64,
    /// A shared queue just destroyed, to create again with the next request, while
    /// Transfers are parked on it.
    recreate: Option<QueueName>,
    /// Sends left in a burst that fills one queue towards its limit, and the queue.
    burst: Option<(u64, QueueName)>,
}

impl RawMemory {
    fn learn_queue(&mut self, name: &QueueName) {
        // Only queues whose traffic is recorded request by request: the library's queues
        // (`lsvc*`, `*.lib`) would show messages the checkers cannot tie to a Send.
        let text = name.to_text();
        if text.starts_with("lsvc") || text.ends_with(".lib") {
            return;
        }
        if !self.queues.contains(name) && self.queues.len() < 24 {
            self.queues.push(name.clone());
        }
    }

    fn learn_id(&mut self, id: &MessageId) {
        let ids = self.ids.entry(id.queue.clone()).or_default();
        if !ids.contains(&id.index) {
            ids.push(id.index);
            if ids.len() > 32 {
                ids.remove(0);
            }
        }
    }
}

/// One connection of a raw protocol actor: random requests with arbitrary cursors and
/// timeouts. The process's tasks share one session token, so a process with several raw
/// tasks is a session with several connections.
async fn raw_actor(ctx: Ctx, actor: Rc<str>, mut rng: SimRng) {
    let features = ctx.features.clone();
    let memory = Rc::new(RefCell::new(RawMemory::default()));
    {
        let mut memory = memory.borrow_mut();
        for name in RAW_QUEUES {
            memory.learn_queue(&QueueName::from(name));
        }
        if features.transient {
            memory.learn_queue(&QueueName::from(format!("{}.t0", ctx.token)));
            memory.learn_queue(&QueueName::from(format!("{}.t1", ctx.token)));
        }
    }
    let mut conn: Option<SimConn> = None;
    let mut delay = Duration::from_millis(100);
    loop {
        // A burst sends back to back, to fill its queue before anyone acks.
        if memory.borrow().burst.is_none() {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        }
        if conn.as_ref().is_none_or(|c| c.is_broken()) {
            let login = !(features.skip_login && rng.chance(0.05));
            conn = connect(&ctx, &actor, login).await;
            if conn.is_none() {
                backoff(&mut delay).await;
                continue;
            }
            delay = Duration::from_millis(100);
        }
        let Some(c) = conn.as_mut() else { continue };
        if features.reconnect && rng.chance(0.03) {
            conn = None;
            continue;
        }
        if ctx.limits.is_some() && *ctx.phase.borrow() == Phase::Chaos && rng.chance(0.02) {
            hog_connections(&ctx, &actor, &mut rng).await;
        }
        let own_session = c.session.as_deref() == Some(ctx.token.as_str());
        let request = match &ctx.limits {
            Some(limits) if rng.chance(0.2) => {
                limit_request(&ctx, &actor, limits, own_session, &memory, &mut rng)
            }
            _ => raw_request(&ctx, &actor, &features, &memory, &mut rng),
        };
        let outcome = c.exec(request.clone()).await;
        learn(&memory, &request, &outcome);
    }
}

fn raw_request(
    ctx: &Ctx,
    actor: &str,
    features: &RawFeatures,
    memory: &Rc<RefCell<RawMemory>>,
    rng: &mut SimRng,
) -> Request {
    let mut memory = memory.borrow_mut();
    let own_transient =
        |rng: &mut SimRng| QueueName::from(format!("{}.t{}", ctx.token, rng.below(2)));
    let any_queue = |memory: &RawMemory, rng: &mut SimRng| rng.pick(&memory.queues).clone();
    if let Some(name) = memory.recreate.take() {
        return Request::CreatePersistent(name);
    }
    if let Some((left, queue)) = memory.burst.take() {
        if left > 1 {
            memory.burst = Some((left - 1, queue.clone()));
        }
        memory.sends += 1;
        let payload = Bytes::from(format!("{actor}#{}", memory.sends));
        return Request::Send {
            queue,
            message: Message {
                payload,
                kind: MessageKind::Request {
                    reply_to: QueueName::from(*rng.pick(&RAW_QUEUES)),
                },
            },
        };
    }
    loop {
        match rng.below(100) {
            0..=7 => {
                return Request::CreatePersistent(QueueName::from(*rng.pick(&RAW_QUEUES)));
            }
            8..=13 if features.transient => {
                if rng.chance(0.15) {
                    return Request::CreateTransient(None);
                }
                return Request::CreateTransient(Some(own_transient(rng)));
            }
            14..=17 if features.destroy => {
                let name = if features.transient && rng.chance(0.5) {
                    own_transient(rng)
                } else {
                    let name = QueueName::from(*rng.pick(&RAW_QUEUES));
                    // Destroy and create again at once, while Transfers are parked on it.
                    if rng.chance(0.5) {
                        memory.recreate = Some(name.clone());
                    }
                    name
                };
                return Request::Destroy(name);
            }
            18..=44 => {
                memory.sends += 1;
                let queue = any_queue(&memory, rng);
                let payload = Bytes::from(format!("{actor}#{}", memory.sends));
                let kind = if rng.chance(0.8) {
                    MessageKind::Request {
                        reply_to: any_queue(&memory, rng),
                    }
                } else {
                    let queue = any_queue(&memory, rng);
                    let index = rng.below(1 << 20) as i64;
                    MessageKind::Response {
                        request: MessageId::new(queue, index),
                    }
                };
                return Request::Send {
                    queue,
                    message: Message { payload, kind },
                };
            }
            45..=74 => {
                let mut queues = vec![any_queue(&memory, rng)];
                if rng.chance(0.25) {
                    let second = any_queue(&memory, rng);
                    if !queues.contains(&second) {
                        queues.push(second);
                    }
                }
                let seen: Vec<i64> = queues
                    .iter()
                    .filter_map(|q| memory.ids.get(q))
                    .flatten()
                    .copied()
                    .collect();
                let from = match rng.below(6) {
                    0 => None,
                    1 => Some(-1),
                    2 | 3 => memory.cursors.get(&queues).copied(),
                    4 if !seen.is_empty() => Some(*rng.pick(&seen) - rng.below(2) as i64),
                    _ => seen.iter().min().map(|m| m - 1),
                };
                let timeout_s = match rng.below(10) {
                    0..=3 => 0.0,
                    4..=7 => rng.below(1000) as f64 / 1000.0,
                    _ if features.long_polls => rng.range(2, 12) as f64,
                    _ => 0.5,
                };
                return Request::Transfer(TransferRequest {
                    from,
                    timeout_s,
                    queues,
                });
            }
            75..=86 if features.ack => {
                let queue = any_queue(&memory, rng);
                let index = match memory.ids.get(&queue) {
                    Some(ids) if !ids.is_empty() && rng.chance(0.9) => *rng.pick(ids),
                    _ => rng.below(1 << 20) as i64,
                };
                return Request::Ack(MessageId::new(queue, index));
            }
            87..=92 => {
                let prefix = if rng.chance(0.5) { "" } else { "r" };
                return Request::List {
                    prefix: QueueName::from(prefix),
                    alive_only: rng.chance(0.3),
                };
            }
            93..=97 => return Request::Diagnostics,
            98 => return Request::Login(SessionToken::from(ctx.token.as_str())),
            _ => {}
        }
    }
}

/// A request aimed at one of the seed's drawn limits: a body just under or over the body
/// limit, a name just under or over the name limit, a long poll over the wait limit, a login
/// past the per-connection limit, or the start of a burst that fills a queue.
fn limit_request(
    ctx: &Ctx,
    actor: &str,
    limits: &Limits,
    own_session: bool,
    memory: &Rc<RefCell<RawMemory>>,
    rng: &mut SimRng,
) -> Request {
    let mut memory = memory.borrow_mut();
    let shared = |rng: &mut SimRng| QueueName::from(*rng.pick(&RAW_QUEUES));
    match rng.below(9) {
        // Fresh transient queues, towards the queue limit (they go with the connection).
        7 | 8 => Request::CreateTransient(None),
        0 | 1 => {
            memory.sends += 1;
            let mut payload = format!("{actor}#{}~", memory.sends).into_bytes();
            // Within a few bytes of the body limit, either side of it.
            let size = (limits.body_bytes_max + rng.range(0, 24) as usize).saturating_sub(16);
            payload.resize(size.max(payload.len()), b'x');
            Request::Send {
                queue: rng.pick(&memory.queues).clone(),
                message: Message {
                    payload: Bytes::from(payload),
                    kind: MessageKind::Request {
                        reply_to: shared(rng),
                    },
                },
            }
        }
        2 => {
            // `L0` one byte under the limit, `L1` at it, `L2` one byte over (never created).
            let index = rng.below(LONG_NAMES as u64 + 1) as usize;
            let mut name = format!("L{index}").into_bytes();
            name.resize(limits.engine.name_bytes_max - 1 + index, b'n');
            let name = QueueName::new(name);
            match rng.below(3) {
                0 => Request::CreatePersistent(name),
                1 => {
                    memory.sends += 1;
                    Request::Send {
                        queue: name,
                        message: Message {
                            payload: Bytes::from(format!("{actor}#{}", memory.sends)),
                            kind: MessageKind::Request {
                                reply_to: shared(rng),
                            },
                        },
                    }
                }
                _ => Request::Transfer(TransferRequest {
                    from: None,
                    timeout_s: 0.0,
                    queues: vec![shared(rng), name],
                }),
            }
        }
        3 => Request::Transfer(TransferRequest {
            from: memory
                .cursors
                .get(&RAW_QUEUES.map(QueueName::from)[..])
                .copied(),
            timeout_s: limits.engine.wait_timeout_max.as_secs_f64() + rng.range(1, 3) as f64,
            queues: RAW_QUEUES.map(QueueName::from).to_vec(),
        }),
        // Extra tokens sort after the connection's own, so its session does not change.
        4 if own_session => Request::Login(SessionToken::from(format!(
            "{}~{}",
            ctx.token,
            rng.below(limits.engine.logins_per_connection_max as u64 + 2)
        ))),
        _ => {
            // A shared queue is created first (a no-op if it exists); then the sends go back
            // to back. Other queues are only sent to: creating them persistent would blur
            // which session owns a transient name.
            let count = rng.range(3, limits.engine.queue_messages_max as u64 + 4);
            if rng.chance(0.7) {
                let queue = shared(rng);
                memory.burst = Some((count, queue.clone()));
                Request::CreatePersistent(queue)
            } else {
                let queue = rng.pick(&memory.queues).clone();
                memory.burst = Some((count + 1, queue.clone()));
                Request::Transfer(TransferRequest {
                    from: None,
                    timeout_s: 0.0,
                    queues: vec![queue],
                })
            }
        }
    }
}

/// Opens a few more connections than the switch has room for (with drawn limits), holds them
/// a moment and closes them; only in the chaos phase, so that the liveness phase is not
/// starved of connections.
async fn hog_connections(ctx: &Ctx, actor: &Rc<str>, rng: &mut SimRng) {
    let mut held = Vec::new();
    for _ in 0..rng.range(2, 4) {
        if let Some(conn) = connect(ctx, actor, true).await {
            held.push(conn);
        }
    }
    tokio::time::sleep(Duration::from_millis(rng.range(300, 1500))).await;
    drop(held);
}

/// A listener over both shared raw queues with one cursor (issue 12): it long-polls them
/// together, follows each reply's `next` (keeping it across reconnects: ids only grow) and
/// acks some of what it gets. A reply cut short by the reply limit must leave nothing below
/// `next`, which the at-least-once checker judges on every reply.
async fn listener(ctx: Ctx, actor: Rc<str>, mut rng: SimRng) {
    let queues: Vec<QueueName> = RAW_QUEUES.map(QueueName::from).to_vec();
    let mut cursor: Option<i64> = None;
    let mut delay = Duration::from_millis(100);
    let mut conn: Option<SimConn> = None;
    loop {
        if conn.as_ref().is_none_or(|c| c.is_broken()) {
            conn = connect(&ctx, &actor, true).await;
            if conn.is_none() {
                backoff(&mut delay).await;
                continue;
            }
            delay = Duration::from_millis(100);
        }
        let Some(c) = conn.as_mut() else { continue };
        let timeout_s = match rng.below(4) {
            0 => 0.0,
            1 => rng.below(1000) as f64 / 1000.0,
            _ => rng.range(1, 6) as f64,
        };
        let outcome = c
            .exec(Request::Transfer(TransferRequest {
                from: cursor,
                timeout_s,
                queues: queues.clone(),
            }))
            .await;
        match outcome {
            Outcome::Ok(ReplyData::Transfer(reply)) => {
                cursor = Some(reply.next);
                for (id, _) in reply.messages {
                    if ctx.features.ack && rng.chance(0.3) {
                        c.exec(Request::Ack(id)).await;
                    }
                }
            }
            Outcome::Status(..) => backoff(&mut delay).await,
            _ => {}
        }
        if timeout_s < 1.0 {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        }
    }
}

fn learn(memory: &Rc<RefCell<RawMemory>>, request: &Request, outcome: &Outcome) {
    let mut memory = memory.borrow_mut();
    match (request, outcome) {
        (_, Outcome::Ok(ReplyData::Sent(Some(id)))) => memory.learn_id(id),
        (Request::CreateTransient(None), Outcome::Ok(ReplyData::Name(name))) => {
            memory.learn_queue(name)
        }
        (Request::Transfer(transfer), Outcome::Ok(ReplyData::Transfer(reply))) => {
            for (id, _) in &reply.messages {
                memory.learn_id(id);
            }
            memory.cursors.insert(transfer.queues.clone(), reply.next);
        }
        (_, Outcome::Ok(ReplyData::List(names))) => {
            for name in names {
                memory.learn_queue(name);
            }
        }
        _ => {}
    }
}

/// The janitor: once every client is gone, records what is left and destroys it, so that the
/// leak check can expect an empty switch.
pub async fn janitor(
    net: Arc<Net>,
    recorder: Rc<Recorder>,
    mut phase: watch::Receiver<Phase>,
    done: Rc<std::cell::Cell<bool>>,
) -> turmoil::Result {
    let _ = phase.wait_for(|p| *p >= Phase::Janitor).await;
    let actor: Rc<str> = "janitor".into();
    let ctx_host = "janitor";
    let mut conn = loop {
        match SimConn::open(&net, ctx_host, actor.clone(), recorder.clone()).await {
            Ok(conn) => break conn,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    conn.exec(Request::Login(SessionToken::from("janitor")))
        .await;
    conn.exec(Request::Diagnostics).await;
    if let Outcome::Ok(ReplyData::List(names)) = conn
        .exec(Request::List {
            prefix: QueueName::from(""),
            alive_only: false,
        })
        .await
    {
        for name in names {
            conn.exec(Request::Destroy(name)).await;
        }
    }
    conn.exec(Request::Diagnostics).await;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.set(true);
    Ok(())
}
