//! One simulation run: the per-seed plan (swarm features, hosts, fault schedule), the turmoil
//! world with the real switch on one host and the actors on others, the phases (chaos,
//! liveness, stop, janitor) and what the checkers need afterwards.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use message_switch::engine::{AckSync, Timestamp};
use message_switch::protocol::QueueName;
use message_switch::server::{Config, Switch};
use message_switch::store::{self, MemoryStorage};

use crate::history::{Event, Probe, Recorder, What};
use crate::limits::{Limits, Needs};
use crate::net::{ConnRecord, Net, SimListener, SWITCH_HOST};
use crate::rng::SimRng;
use crate::workload::{self, Ctx, HostPlan, Phase, RawFeatures, Role};

/// The switch's clock at virtual time zero (ns since the Unix epoch). A restarted switch
/// starts at `BASE + elapsed`, so its ids keep growing, as a real restart's would.
pub const BASE_NS: i64 = 1_700_000_000_000_000_000;
/// turmoil's step.
pub const TICK: Duration = Duration::from_millis(1);
/// The normal largest one-way latency of a link.
pub const LATENCY_MAX: Duration = Duration::from_millis(10);
/// How often the switch host records its bookkeeping.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long after the heal RPC calls must start succeeding.
pub const SETTLE: Duration = Duration::from_secs(5);

/// A change to the world the harness makes at a given time.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Reset the n-th live connection (modulo their number), at both ends.
    DropConnection(u64),
    /// Hold every segment between a host and the switch.
    Hold(String),
    /// Deliver what was held.
    Release(String),
    /// Drop every segment between a host and the switch.
    Partition(String),
    /// Heal a partition (connections that lost segments are reset).
    Repair(String),
    /// Raise the largest latency between a host and the switch, in ms.
    Latency(String, u64),
    /// Back to the normal latency.
    LatencyRestore(String),
    /// Crash a client host (its process dies; the kernel closes its sockets).
    Crash(String),
    /// Start a crashed client host again (a new process, with a new token).
    Restart(String),
    /// Crash the switch.
    CrashSwitch,
    /// Start the switch again: empty, or, in a durable run, with what its journal had synced.
    RestartSwitch,
}

/// The plan of one seed.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// The client hosts.
    pub hosts: Vec<HostPlan>,
    /// Raw-actor features.
    pub features: RawFeatures,
    /// The fault schedule (virtual µs, action), ascending.
    pub faults: Vec<(u64, Action)>,
    /// End of the chaos phase (µs).
    pub heal_us: u64,
    /// Start of the stop phase (µs).
    pub stop_us: u64,
    /// The largest link latency any fault sets (µs).
    pub latency_max_us: u64,
    /// A durable run: the switch journals to an in-memory storage that outlives its crashes.
    pub durability: Option<Durability>,
    /// Small limits drawn for this seed, or `None` for the switch's defaults.
    pub limits: Option<Limits>,
}

/// How a durable run's switch journals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Durability {
    /// How long each sync of the in-memory journal takes (virtual time), so that a switch
    /// crash can fall between a write and its sync and lose the unsynced tail.
    pub sync_delay: Duration,
    /// Journal bytes after which the switch compacts (writes a snapshot and starts a new
    /// segment). Most seeds set it a few KiB low, so that runs compact often and crashes land
    /// around snapshots as well as around syncs; `None` keeps the production default, which a
    /// run never reaches.
    pub compaction_bytes_min: Option<u64>,
    /// When the switch answers an Ack: half the durable seeds run with lazy acks.
    pub ack_sync: AckSync,
}

/// What a run leaves for the checkers.
pub struct RunResult {
    /// The plan.
    pub plan: Plan,
    /// The history.
    pub events: Vec<Event>,
    /// Every connection's life.
    pub conns: Vec<ConnRecord>,
    /// Hold intervals per host (µs), for when FINs were delayed.
    pub holds: Vec<(String, u64, u64)>,
    /// When the janitor finished, if it did.
    pub janitor_done_us: Option<u64>,
    /// Whether every client process stopped when asked.
    pub clients_stopped: bool,
    /// A host's software failed (returned an error).
    pub host_error: Option<String>,
    /// When the run ended (µs).
    pub end_us: u64,
}

/// Draws the plan of `seed`.
pub fn plan(seed: u64) -> Plan {
    let mut rng = SimRng::new(seed);
    let mut rng_plan = rng.fork(1);
    let r = &mut rng_plan;
    let host_count = r.range(2, 5) as usize;
    let use_rpc = r.chance(0.8);
    let use_raw = !use_rpc || r.chance(0.75);
    let services: Vec<QueueName> = (0..r.range(1, 2))
        .map(|i| QueueName::from(format!("svc{i}")))
        .collect();
    // RPC through the client library, on its own services.
    let use_lib = r.chance(0.7);
    let lib_services: Vec<QueueName> = (0..r.range(1, 2))
        .map(|i| QueueName::from(format!("lsvc{i}")))
        .collect();
    let mut hosts: Vec<HostPlan> = (0..host_count)
        .map(|i| HostPlan {
            name: format!("c{i}"),
            roles: Vec::new(),
        })
        .collect();
    if use_rpc {
        // Every service has a server, so that calls can complete once faults heal.
        for service in &services {
            let host = r.below(host_count as u64) as usize;
            hosts[host].roles.push(Role::RpcServer {
                service: service.clone(),
            });
        }
        for _ in 0..r.range(1, 3) {
            let host = r.below(host_count as u64) as usize;
            hosts[host].roles.push(Role::RpcCaller {
                services: services.clone(),
            });
        }
    }
    if use_lib {
        for service in &lib_services {
            let host = r.below(host_count as u64) as usize;
            hosts[host].roles.push(Role::LibServer {
                service: service.clone(),
            });
        }
        for _ in 0..r.range(1, 3) {
            let host = r.below(host_count as u64) as usize;
            hosts[host].roles.push(Role::LibCaller {
                services: lib_services.clone(),
            });
        }
    }
    let features = RawFeatures {
        transient: r.chance(0.75),
        destroy: r.chance(0.5),
        ack: r.chance(0.8),
        skip_login: r.chance(0.3),
        reconnect: r.chance(0.5),
        long_polls: r.chance(0.7),
    };
    if use_raw {
        let multi = r.chance(0.6);
        for host in hosts.iter_mut() {
            if host.roles.is_empty() || r.chance(0.5) {
                let conns = if multi { r.range(1, 3) } else { 1 };
                for _ in 0..conns {
                    host.roles.push(Role::Raw);
                }
            }
        }
    }
    // A listener over both shared queues with one cursor, in most seeds with raw actors.
    let mut rng_listener = rng.fork(8);
    if use_raw && rng_listener.chance(0.7) {
        let host = rng_listener.below(host_count as u64) as usize;
        hosts[host].roles.push(Role::Listener);
    }
    hosts.retain(|h| !h.roles.is_empty());

    let chaos_us = r.range(8, 16) * 1_000_000;
    let heal_us = chaos_us;
    let stop_us = heal_us + SETTLE.as_micros() as u64 + r.range(6, 10) * 1_000_000;
    let (faults, latency_max_us) = fault_schedule(&mut rng.fork(2), &hosts, heal_us);
    // Odd seeds are durable: half of any range of seeds, default set included, whatever the
    // other draws. The delay comes from a fork of its own, so that adding durability left
    // every other draw as it was.
    let durability = (seed % 2 == 1).then(|| Durability {
        // One durable seed in two has a slow disk (a busy spinning disk syncs in tens of
        // ms): stores then wait in the journal's inbox long enough for a quick Ack to
        // withdraw them. By the seed, so every other draw stays as it was.
        sync_delay: if seed % 4 == 3 {
            Duration::from_millis(rng.fork(10).range(10, 40))
        } else {
            Duration::from_millis(rng.fork(5).range(1, 3))
        },
        // A fork drawn after every other, so that adding compaction left the rest as it was.
        compaction_bytes_min: [None, Some(2 << 10), Some(8 << 10), Some(32 << 10)]
            [rng.fork(6).range(0, 3) as usize],
        // A fork of its own, so that adding lazy acks left every other draw as it was.
        ack_sync: if rng.fork(9).chance(0.5) {
            AckSync::Lazy
        } else {
            AckSync::Strict
        },
    });
    // Seeds 2 and 3 of every 4 draw small limits: half of any range of seeds, durable and
    // in-memory alike. From a fork of its own, drawn after every other. The raw actors are
    // the ones that aim at the limits, so such a seed always has one.
    let mut rng_limits = rng.fork(7);
    let limits = ((seed / 2) % 2 == 1).then(|| {
        if !hosts
            .iter()
            .any(|h| h.roles.iter().any(|r| matches!(r, Role::Raw)))
        {
            let host = rng_limits.below(hosts.len() as u64) as usize;
            hosts[host].roles.push(Role::Raw);
        }
        Limits::draw(&mut rng_limits, needs(&hosts))
    });
    Plan {
        seed,
        hosts,
        features,
        faults,
        heal_us,
        stop_us,
        latency_max_us,
        durability,
        limits,
    }
}

/// What the actors of `hosts` need from the switch when nothing is wrong: the drawn limits
/// sit just above it, so that only the floods and the extra connections reach them.
fn needs(hosts: &[HostPlan]) -> Needs {
    let mut needs = Needs {
        // The shared raw queues and the long-named ones.
        queues: workload::RAW_QUEUES.len() + workload::LONG_NAMES,
        // The janitor comes once every client has gone, so it needs no room of its own.
        connections: 0,
    };
    let mut services = BTreeSet::new();
    for host in hosts {
        let mut raw = false;
        for role in &host.roles {
            let (queues, connections) = match role {
                Role::RpcServer { service } | Role::LibServer { service } => {
                    services.insert(service.clone());
                    (0, 2)
                }
                // A reply queue each.
                Role::RpcCaller { .. } | Role::LibCaller { .. } => (1, 2),
                Role::Raw => {
                    raw = true;
                    (0, 1)
                }
                Role::Listener => (0, 1),
                // Plans with these set their own limits (`hostile::plan`).
                Role::Hostile(_) | Role::Late { .. } => (0, 0),
            };
            needs.queues += queues;
            needs.connections += connections;
        }
        if raw {
            // Its own two transient queues.
            needs.queues += 2;
        }
    }
    needs.queues += services.len();
    needs
}

/// A seeded fault schedule over `[0.5 s, heal)`. Each seed enables a random subset of fault
/// kinds and a random rate; faults of one kind never overlap on one host, so every start has
/// its matching end.
fn fault_schedule(rng: &mut SimRng, hosts: &[HostPlan], heal_us: u64) -> (Vec<(u64, Action)>, u64) {
    let kinds: Vec<u8> = (0..6u8).filter(|_| rng.chance(0.5)).collect();
    let mut latency_max_us = LATENCY_MAX.as_micros() as u64;
    let mut faults = Vec::new();
    if kinds.is_empty() || hosts.is_empty() {
        return (faults, latency_max_us);
    }
    let gap_mean_ms = rng.range(300, 2500);
    // Per host and fault family (link, latency, crash): busy until.
    let mut busy: Vec<[u64; 3]> = vec![[0; 3]; hosts.len()];
    let mut switch_busy = 0u64;
    let mut t = 500_000u64;
    loop {
        t += rng.range(50, 2 * gap_mean_ms) * 1000;
        if t >= heal_us {
            break;
        }
        let kind = *rng.pick(&kinds);
        let h = rng.below(hosts.len() as u64) as usize;
        let host = hosts[h].name.clone();
        let end = |rng: &mut SimRng, lo: u64, hi: u64| (t + rng.range(lo, hi) * 1000).min(heal_us);
        match kind {
            0 => faults.push((t, Action::DropConnection(rng.next()))),
            1 | 2 if busy[h][0] <= t => {
                let (start, stop) = if kind == 1 {
                    (Action::Hold(host.clone()), Action::Release(host))
                } else {
                    (Action::Partition(host.clone()), Action::Repair(host))
                };
                let until = end(rng, 200, 3500);
                busy[h][0] = until + 1;
                faults.push((t, start));
                faults.push((until, stop));
            }
            3 if busy[h][1] <= t => {
                let max_ms = rng.range(100, 1500);
                latency_max_us = latency_max_us.max(max_ms * 1000);
                let until = end(rng, 500, 4000);
                busy[h][1] = until + 1;
                faults.push((t, Action::Latency(host.clone(), max_ms)));
                faults.push((until, Action::LatencyRestore(host)));
            }
            4 if busy[h][2] <= t => {
                let until = end(rng, 300, 4000);
                busy[h][2] = until + 1;
                faults.push((t, Action::Crash(host.clone())));
                faults.push((until, Action::Restart(host)));
            }
            5 if switch_busy <= t => {
                let until = end(rng, 100, 2000);
                switch_busy = until + 1;
                faults.push((t, Action::CrashSwitch));
                faults.push((until, Action::RestartSwitch));
            }
            _ => {}
        }
    }
    // A stable sort keeps a start before its end when both fall at `heal`.
    faults.sort_by_key(|(t, _)| *t);
    (faults, latency_max_us)
}

/// Runs the plan of `seed` to the end and returns what happened.
pub fn run(seed: u64) -> RunResult {
    run_plan(plan(seed))
}

/// Runs `plan` (drawn by [`plan`], or by `hostile::plan`) to the end.
pub fn run_plan(plan: Plan) -> RunResult {
    let seed = plan.seed;
    let mut rng = SimRng::new(seed).fork(3);
    let net = Net::new();
    let recorder = Rc::new(Recorder::default());
    let (phase_tx, phase_rx) = watch::channel(Phase::Chaos);
    let features = Rc::new(plan.features.clone());
    let limits = plan.limits.clone().map(Rc::new);
    // The switch's "disk": it lives outside the switch host, so it survives the host's crash
    // (minus its unsynced tail, dropped in `World::apply`) as a real disk would.
    let storage = plan.durability.map(|d| (MemoryStorage::new(), d));

    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(TICK)
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_nanos(BASE_NS as u64))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(LATENCY_MAX)
        .tcp_capacity(1024)
        .build_with_rng(Box::new(rng.fork(4)));

    {
        let net = net.clone();
        let recorder = recorder.clone();
        let storage = storage.clone();
        let limits = plan.limits.clone();
        sim.host(SWITCH_HOST, move || {
            switch_host(
                net.clone(),
                recorder.clone(),
                storage.clone(),
                limits.clone(),
            )
        });
    }
    for host in &plan.hosts {
        let incarnation = Rc::new(Cell::new(0u32));
        let name = host.name.clone();
        let roles = host.roles.clone();
        let net = net.clone();
        let recorder = recorder.clone();
        let phase = phase_rx.clone();
        let features = features.clone();
        let limits = limits.clone();
        sim.host(host.name.as_str(), move || {
            incarnation.set(incarnation.get() + 1);
            let ctx = Ctx {
                net: net.clone(),
                recorder: recorder.clone(),
                host: name.clone(),
                token: format!("{name}.{}", incarnation.get()),
                features: features.clone(),
                limits: limits.clone(),
                phase: phase.clone(),
            };
            let rng = SimRng::new(seed ^ hash(&ctx.token));
            workload::run_process(ctx, roles.clone(), rng, phase.clone())
        });
    }
    let janitor_done = Rc::new(Cell::new(false));
    {
        let net = net.clone();
        let recorder = recorder.clone();
        let phase = phase_rx.clone();
        let done = janitor_done.clone();
        sim.host("janitor", move || {
            workload::janitor(net.clone(), recorder.clone(), phase.clone(), done.clone())
        });
    }

    let mut world = World {
        sim,
        net: net.clone(),
        recorder: recorder.clone(),
        holds: Vec::new(),
        hold_started: Vec::new(),
        crashed: BTreeSet::new(),
        switch_down: false,
        storage: storage.map(|(storage, _)| storage),
        host_error: None,
    };
    let mut faults = plan.faults.iter().peekable();
    // Chaos and liveness phases.
    while world.now() < plan.stop_us && world.host_error.is_none() {
        while let Some((t, action)) = faults.peek() {
            if *t > world.now() {
                break;
            }
            world.apply(action);
            faults.next();
        }
        if world.now() >= plan.heal_us && phase_tx.borrow().lt(&Phase::Live) {
            world.heal(&plan);
            phase_tx.send_replace(Phase::Live);
            world.note("phase: live");
        }
        world.step();
    }
    // Stop: every client process exits; give them a bounded time.
    phase_tx.send_replace(Phase::Stop);
    world.note("phase: stop");
    let stop_deadline = world.now() + 10_000_000;
    let mut clients_stopped = false;
    let mut exited = BTreeSet::new();
    while world.now() < stop_deadline && world.host_error.is_none() {
        world.step();
        for host in &plan.hosts {
            if !world.sim.is_host_running(host.name.as_str()) && exited.insert(host.name.clone()) {
                world.exit_process(&host.name);
            }
        }
        if exited.len() == plan.hosts.len() {
            clients_stopped = true;
            break;
        }
    }
    // The janitor cleans up; then the switch must be back to empty.
    phase_tx.send_replace(Phase::Janitor);
    world.note("phase: janitor");
    let janitor_deadline = world.now() + 10_000_000;
    let mut janitor_done_us = None;
    while world.now() < janitor_deadline && world.host_error.is_none() {
        world.step();
        if janitor_done.get() {
            janitor_done_us = Some(world.now());
            break;
        }
    }
    let settle_until = world.now() + 1_500_000;
    while world.now() < settle_until && world.host_error.is_none() {
        world.step();
    }
    world.note("end");
    let end_us = world.now();
    let holds = world.holds.clone();
    let host_error = world.host_error.clone();
    // Taken before the simulation is torn down, which drops every socket still open: what
    // the switch left open at the end must show as such.
    let conns = net.records();
    drop(world);
    RunResult {
        plan,
        events: recorder.events(),
        conns,
        holds,
        janitor_done_us,
        clients_stopped,
        host_error,
        end_us,
    }
}

struct World<'a> {
    sim: turmoil::Sim<'a>,
    net: Arc<Net>,
    recorder: Rc<Recorder>,
    holds: Vec<(String, u64, u64)>,
    hold_started: Vec<(String, u64)>,
    crashed: BTreeSet<String>,
    switch_down: bool,
    /// The durable switch's storage, whose unsynced tail a switch crash loses.
    storage: Option<MemoryStorage>,
    host_error: Option<String>,
}

impl World<'_> {
    fn now(&self) -> u64 {
        self.sim.elapsed().as_micros() as u64
    }

    fn step(&mut self) {
        if let Err(error) = self.sim.step() {
            self.host_error = Some(error.to_string());
        }
    }

    /// The client process on `host` has returned from its main function: end it the way an
    /// operating system ends a process, closing every socket it still holds. turmoil would
    /// instead keep the tasks it spawned (a connect in flight, say) alive and never poll them
    /// again, so their sockets, and the switch's ends of them, would stay open for ever (seed
    /// 5977). Restarting the host and crashing it at once drops those tasks, before the new
    /// incarnation runs.
    fn exit_process(&mut self, host: &str) {
        self.sim.bounce(host);
        self.sim.crash(host);
    }

    fn note(&self, text: &str) {
        self.recorder
            .record_at(self.now(), What::Harness(text.to_owned()));
    }

    fn apply(&mut self, action: &Action) {
        let now = self.now();
        let mut text = format!("{action:?}");
        match action {
            Action::DropConnection(pick) => {
                let live = self.net.live_connections();
                if live.is_empty() {
                    return;
                }
                let id = live[(*pick % live.len() as u64) as usize];
                self.net.reset(id, now);
                text = format!("DropConnection(conn {id})");
            }
            Action::Hold(host) => {
                self.sim.hold(host.as_str(), SWITCH_HOST);
                self.hold_started.push((host.clone(), now));
            }
            Action::Release(host) => self.release(host),
            Action::Partition(host) => {
                self.net.set_partitioned(host, true);
                self.sim.partition(host.as_str(), SWITCH_HOST);
            }
            Action::Repair(host) => {
                let reset = self.repair(host);
                text = format!("Repair({host}) reset {reset:?}");
            }
            Action::Latency(host, ms) => {
                self.sim.set_link_max_message_latency(
                    host.as_str(),
                    SWITCH_HOST,
                    Duration::from_millis(*ms),
                );
            }
            Action::LatencyRestore(host) => {
                self.sim
                    .set_link_max_message_latency(host.as_str(), SWITCH_HOST, LATENCY_MAX);
            }
            Action::Crash(host) => {
                if self.crashed.contains(host) || !self.sim.is_host_running(host.as_str()) {
                    return;
                }
                self.sim.crash(host.as_str());
                self.crashed.insert(host.clone());
            }
            Action::Restart(host) => {
                if !self.crashed.remove(host) {
                    return;
                }
                self.sim.bounce(host.as_str());
            }
            Action::CrashSwitch => {
                if self.switch_down {
                    return;
                }
                self.sim.crash(SWITCH_HOST);
                // The power went with the host: what the journal wrote but never synced is
                // gone before the next incarnation recovers.
                if let Some(storage) = &self.storage {
                    storage.crash();
                }
                self.switch_down = true;
            }
            Action::RestartSwitch => {
                if !self.switch_down {
                    return;
                }
                self.sim.bounce(SWITCH_HOST);
                self.switch_down = false;
            }
        }
        self.recorder.record_at(now, What::Harness(text));
    }

    fn release(&mut self, host: &str) {
        let now = self.now();
        self.sim.release(host, SWITCH_HOST);
        if let Some(index) = self.hold_started.iter().position(|(h, _)| h == host) {
            let (host, start) = self.hold_started.remove(index);
            self.holds.push((host, start, now));
        }
    }

    fn repair(&mut self, host: &str) -> Vec<u64> {
        self.sim.repair(host, SWITCH_HOST);
        self.net.set_partitioned(host, false);
        self.net.reset_doomed(host, self.now())
    }

    /// Ends every fault: links healthy, latency normal, crashed hosts restarted.
    fn heal(&mut self, plan: &Plan) {
        self.note("heal");
        for host in &plan.hosts {
            let name = host.name.clone();
            if self.hold_started.iter().any(|(h, _)| *h == name) {
                self.release(&name);
            }
            if self.net.is_partitioned(&name) {
                self.repair(&name);
            }
            self.sim
                .set_link_max_message_latency(name.as_str(), SWITCH_HOST, LATENCY_MAX);
            if self.crashed.remove(&name) {
                self.sim.bounce(name.as_str());
            }
        }
        if self.switch_down {
            self.sim.bounce(SWITCH_HOST);
            self.switch_down = false;
        }
    }
}

/// The switch host: the real server over turmoil TCP, plus a probe of its bookkeeping. With
/// `storage` it is durable: each incarnation recovers what the previous ones synced.
async fn switch_host(
    net: Arc<Net>,
    recorder: Rc<Recorder>,
    storage: Option<(MemoryStorage, Durability)>,
    limits: Option<Limits>,
) -> turmoil::Result {
    let epoch = net.begin_epoch();
    let elapsed = turmoil::sim_elapsed().unwrap_or_default();
    let start = Timestamp::from_unix_nanos(BASE_NS + elapsed.as_nanos() as i64);
    let mut config = Config {
        start_time: Some(start),
        ..Config::default()
    };
    if let Some(limits) = limits {
        config.engine = limits.engine;
        config.body_bytes_max = limits.body_bytes_max;
        config.connections_max = limits.connections_max;
        config.client_limits = limits.client_limits;
        config.refusal_delay_max = limits.refusal_delay_max;
    }
    let switch = match storage {
        Some((storage, durability)) => {
            // The journal runs as a task on this host's runtime, so it dies with the host;
            // the storage outlives it.
            let defaults = store::Options::default();
            let (compaction_bytes_min, compaction_ratio) = match durability.compaction_bytes_min {
                // A small journal relative to the snapshot must still trigger compaction.
                Some(bytes) => (bytes, 0.5),
                None => (defaults.compaction_bytes_min, defaults.compaction_ratio),
            };
            let options = store::Options {
                simulated_sync_delay: durability.sync_delay,
                compaction_bytes_min,
                compaction_ratio,
                ..defaults
            };
            let opened = store::open_on_runtime(storage, &options)?;
            config.engine.ack_sync = durability.ack_sync;
            Switch::start_durable(config, opened)
        }
        None => Switch::start(config),
    };
    let listener = SimListener::bind(net, epoch).await?;
    recorder.record(What::SwitchUp { epoch });
    switch.serve(listener);
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        if let Some(stats) = switch.stats().await {
            let journal = switch.journal_stats().unwrap_or_default();
            recorder.record(What::Probe(Probe {
                epoch,
                stats,
                open_connections: switch.open_connections(),
                tcp_streams: turmoil::established_tcp_stream_count(),
                compactions: journal.compactions,
                stores_withdrawn: journal.stores_withdrawn,
            }));
        }
    }
}

/// A stable hash of a string (FNV-1a), for deriving per-process seeds.
pub fn hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
