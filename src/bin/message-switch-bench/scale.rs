//! The scale workloads: fan-out to many listeners, the cost of a send while many Transfers
//! wait elsewhere, and the memory of many queued messages.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use message_switch::client::{Connection, ConnectionConfig, Connector};
use message_switch::protocol::QueueName;

use crate::child::ChildProcess;
use crate::measure::{Latencies, Throughput, Timing, WindowCpu, OPERATIONS_PER_WORKER_MAX};
use crate::probe::Probe;
use crate::rpc::payload;

/// Connections opened at once while setting up thousands of them.
const SETUP_PARALLELISM: usize = 64;

/// How long a listener's or an idle waiter's Transfer asks the switch to wait: longer than
/// any workload, so that none of them times out while measured.
const LONG_POLL: Duration = Duration::from_secs(600);

/// A fan-out round that does not complete in this time fails the run.
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// Most fan-out rounds in one window (the loop is bounded in count as well as in time).
const ROUNDS_MAX: usize = 100_000;

/// What the fan-out workload measured.
pub struct Fanout {
    /// Queues, each with one listener.
    pub queues: usize,
    /// Time from the first Send of a round to the last listener having its message, one
    /// sample per measured round.
    pub rounds: Latencies,
    /// Messages delivered (and acked) in the measured rounds.
    pub delivered: u64,
    /// The measured rounds' wall time and CPU.
    pub cpu: WindowCpu,
}

/// `queues` queues with one listener each (its own connection long-polling its queue and
/// acking what it gets); rounds of one message to every queue, sent over `senders`
/// connections, each round waiting until every listener has acked its message.
pub async fn fanout<C: Connector>(
    connector: C,
    switch_pid: u32,
    queues: usize,
    senders: usize,
    timing: Timing,
) -> Result<Fanout> {
    let names: Arc<Vec<QueueName>> = Arc::new(
        (0..queues)
            .map(|i| QueueName::from(format!("bench.fan.{i}")))
            .collect(),
    );
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let listeners = setup_all(queues, |index| {
        let connector = connector.clone();
        let queue = names[index].clone();
        async move {
            let mut connection = open(&connector, format!("bench-fan-listener:{index}")).await?;
            connection.create_persistent(&queue).await?;
            Ok(connection)
        }
    })
    .await?;
    let mut listening = JoinSet::new();
    for (connection, queue) in listeners.into_iter().zip(names.iter()) {
        listening.spawn(listen(
            connection,
            queue.clone(),
            Arc::clone(&delivered),
            Arc::clone(&progress),
        ));
    }
    wait_for_blocked_transfers(&connector, queues).await?;
    let mut sending = Vec::with_capacity(senders);
    for index in 0..senders {
        sending.push(open(&connector, format!("bench-fan-sender:{index}")).await?);
    }
    let chunk = queues.div_ceil(senders.max(1)).max(1);
    let shares: Vec<Arc<Vec<QueueName>>> = names
        .chunks(chunk)
        .map(|share| Arc::new(share.to_vec()))
        .collect();
    let mut round = Round {
        senders: sending,
        shares,
        delivered,
        progress,
        queues: queues as u64,
    };
    let warmup_end = Instant::now() + timing.warmup;
    while Instant::now() < warmup_end {
        round.run().await?;
    }
    let server_before = crate::child::cpu_time(switch_pid)?;
    let client_before = crate::child::cpu_time(std::process::id())?;
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < timing.window && samples.len() < ROUNDS_MAX {
        let round_start = Instant::now();
        round.run().await?;
        samples.push(u64::try_from(round_start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let elapsed = start.elapsed();
    let cpu = WindowCpu {
        elapsed,
        server: crate::child::cpu_time(switch_pid)?.saturating_sub(server_before),
        server_user: None,
        client: crate::child::cpu_time(std::process::id())?.saturating_sub(client_before),
    };
    drop(listening);
    Ok(Fanout {
        queues,
        delivered: samples.len() as u64 * queues as u64,
        rounds: Latencies::from_samples([samples]),
        cpu,
    })
}

/// The cost of a Send with and without `idle` Transfers parked on other queues.
pub struct IdleCost {
    /// Transfers parked on the busy switch.
    pub idle: usize,
    /// Sends to the quiet switch, where no Transfer is parked.
    pub without: Throughput,
    /// Sends to the busy switch, where `idle` Transfers are parked, each on its own queue.
    pub with: Throughput,
}

/// A switch of the idle-waiter comparison: how to reach it and its process id.
pub struct Target<C> {
    /// Connects to the switch.
    pub connector: C,
    /// The switch's process id, for its CPU time.
    pub pid: u32,
}

/// Measures one connection's Sends (one after another, to a queue nobody listens on) on two
/// switches: `quiet`, where nothing else happens, and `busy`, where `idle` Transfers are
/// parked, each on its own queue and connection. The window is cut into [`IDLE_ROUNDS`]
/// slices that alternate between the two (in alternating order), so that both see the same
/// background load on a shared machine, and the slices of each switch are added up.
pub async fn idle_waiters<C: Connector>(
    quiet: Target<C>,
    busy: Target<C>,
    idle: usize,
    timing: Timing,
) -> Result<IdleCost> {
    let waiters = setup_all(idle, |index| {
        let connector = busy.connector.clone();
        async move {
            let queue = QueueName::from(format!("bench.idle.{index}"));
            let mut connection = open(&connector, format!("bench-idle:{index}")).await?;
            connection.create_persistent(&queue).await?;
            Ok((connection, queue))
        }
    })
    .await?;
    let mut parked = JoinSet::new();
    for (mut connection, queue) in waiters {
        parked.spawn(async move {
            let queues = [queue];
            // Nothing is ever sent to these queues: each Transfer waits until the comparison
            // ends (dropping the JoinSet closes the connection). A failed one is simply
            // missing from the parked count, which `wait_for_blocked_transfers` would report.
            while connection.transfer(None, LONG_POLL, &queues).await.is_ok() {}
        });
    }
    wait_for_blocked_transfers(&busy.connector, idle).await?;
    let mut senders = [
        Sender::open(quiet, "quiet").await?,
        Sender::open(busy, "busy").await?,
    ];
    for sender in &mut senders {
        sender.sends(timing.warmup / 2).await?;
        sender.reset();
    }
    let slice = timing.window / IDLE_ROUNDS;
    for round in 0..IDLE_ROUNDS {
        if round % 2 == 1 {
            senders.reverse();
        }
        for sender in &mut senders {
            sender.sends(slice).await?;
        }
    }
    drop(parked);
    senders.sort_by_key(|sender| sender.tag);
    let [busy, quiet] = senders;
    Ok(IdleCost {
        idle,
        without: quiet.into_throughput(),
        with: busy.into_throughput(),
    })
}

/// The switch's memory before and after storing many messages.
pub struct Memory {
    /// Messages stored.
    pub messages: u64,
    /// Resident set size before the messages were sent.
    pub rss_before: u64,
    /// Resident set size with the messages stored.
    pub rss_after: u64,
    /// How long sending them took.
    pub elapsed: Duration,
}

impl Memory {
    /// Resident bytes per stored message beyond its payload.
    pub fn overhead_per_message(&self) -> f64 {
        let grown = self.rss_after.saturating_sub(self.rss_before) as f64;
        grown / self.messages.max(1) as f64 - crate::rpc::PAYLOAD.len() as f64
    }
}

/// Stores `messages` 100-byte requests in one queue of a fresh `switch`, sent over `senders`
/// connections, and reads the switch's RSS before and after. A small warm-up (sent to
/// another queue, then destroyed) first fills the trace ring and the connections' buffers,
/// which are bounded and would otherwise be counted as per-message cost.
pub async fn memory<C: Connector>(
    connector: C,
    switch: &ChildProcess,
    messages: u64,
    senders: usize,
) -> Result<Memory> {
    let queue = QueueName::from("bench.mem");
    let warm = QueueName::from("bench.mem.warm");
    let mut connections = Vec::with_capacity(senders);
    for index in 0..senders {
        let mut connection = open(&connector, format!("bench-mem:{index}")).await?;
        connection.create_persistent(&queue).await?;
        connection.create_persistent(&warm).await?;
        // Requests name an existing reply queue, as a client's do.
        connection.create_persistent(&memory_replies()).await?;
        connections.push(connection);
    }
    let per_sender = messages.div_ceil(senders.max(1) as u64);
    let warmup_per_sender = (2_000 / senders.max(1) as u64).max(1);
    let mut connections = send_all(connections, &warm, warmup_per_sender).await?;
    connections
        .first_mut()
        .context("no sender")?
        .destroy(&warm)
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = switch.rss_bytes()?;
    let start = Instant::now();
    connections = send_all(connections, &queue, per_sender).await?;
    let elapsed = start.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_after = switch.rss_bytes()?;
    drop(connections);
    Ok(Memory {
        messages: per_sender * senders as u64,
        rss_before,
        rss_after,
        elapsed,
    })
}

/// One fan-out round's senders and bookkeeping.
struct Round {
    senders: Vec<Connection>,
    shares: Vec<Arc<Vec<QueueName>>>,
    delivered: Arc<AtomicU64>,
    progress: Arc<Notify>,
    queues: u64,
}

impl Round {
    /// Sends one message to every queue and waits until every listener has acked its own.
    async fn run(&mut self) -> Result<()> {
        let target = self.delivered.load(Ordering::Acquire) + self.queues;
        let mut sending = JoinSet::new();
        for (mut connection, share) in self.senders.drain(..).zip(self.shares.iter().cloned()) {
            sending.spawn(async move {
                let reply_to = QueueName::from("bench.fan.replies");
                for queue in share.iter() {
                    let id = connection.send_request(queue, &reply_to, payload()).await?;
                    ensure!(id.is_some(), "queue {queue} is missing");
                }
                Ok(connection)
            });
        }
        while let Some(connection) = sending.join_next().await {
            self.senders.push(connection??);
        }
        let deadline = Instant::now() + ROUND_TIMEOUT;
        loop {
            let notified = self.progress.notified();
            if self.delivered.load(Ordering::Acquire) >= target {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, notified).await.is_err() {
                bail!("a fan-out round did not complete within {ROUND_TIMEOUT:?}");
            }
        }
    }
}

/// A fan-out listener: long-polls its queue, acks every message and counts it.
async fn listen(
    mut connection: Connection,
    queue: QueueName,
    delivered: Arc<AtomicU64>,
    progress: Arc<Notify>,
) -> Result<()> {
    let queues = [queue];
    let mut from = None;
    loop {
        let reply = connection.transfer(from, LONG_POLL, &queues).await?;
        if !reply.messages.is_empty() {
            from = Some(reply.next);
        }
        for (id, _) in reply.messages {
            connection.ack(&id).await?;
            delivered.fetch_add(1, Ordering::AcqRel);
            progress.notify_one();
        }
    }
}

/// The slices of the idle-waiter comparison's window, alternating between the switches.
const IDLE_ROUNDS: u32 = 8;

/// One connection sending to one switch of the idle-waiter comparison, adding up what its
/// slices measured.
struct Sender {
    tag: &'static str,
    connection: Connection,
    pid: u32,
    target: QueueName,
    reply_to: QueueName,
    samples_ns: Vec<u64>,
    cpu: WindowCpu,
}

impl Sender {
    async fn open<C: Connector>(target: Target<C>, tag: &'static str) -> Result<Sender> {
        let queue = QueueName::from("bench.idle.target");
        let mut connection = open(&target.connector, format!("bench-idle-sender:{tag}")).await?;
        connection.create_persistent(&queue).await?;
        Ok(Sender {
            tag,
            connection,
            pid: target.pid,
            target: queue,
            reply_to: QueueName::from("bench.idle.replies"),
            samples_ns: Vec::new(),
            cpu: WindowCpu::default(),
        })
    }

    /// Sends one message after another for `length`, adding their latencies and the CPU
    /// time used to the totals.
    async fn sends(&mut self, length: Duration) -> Result<()> {
        let server_before = crate::child::cpu_time(self.pid)?;
        let client_before = crate::child::cpu_time(std::process::id())?;
        let start = Instant::now();
        let mut operations = 0;
        while start.elapsed() < length && operations < OPERATIONS_PER_WORKER_MAX {
            let sent = Instant::now();
            let id = self
                .connection
                .send_request(&self.target, &self.reply_to, payload())
                .await?;
            ensure!(id.is_some(), "the target queue is missing");
            self.samples_ns
                .push(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
            operations += 1;
        }
        self.cpu.add(WindowCpu {
            elapsed: start.elapsed(),
            server: crate::child::cpu_time(self.pid)?.saturating_sub(server_before),
            server_user: None,
            client: crate::child::cpu_time(std::process::id())?.saturating_sub(client_before),
        });
        Ok(())
    }

    /// Forgets what was measured so far (the warm-up).
    fn reset(&mut self) {
        self.samples_ns.clear();
        self.cpu = WindowCpu::default();
    }

    fn into_throughput(self) -> Throughput {
        Throughput {
            latency: Latencies::from_samples([self.samples_ns]),
            cpu: self.cpu,
            requests_per_operation: None,
            syncs_per_operation: None,
        }
    }
}

/// Each connection sends `count` messages to `queue`, all connections at once; returns the
/// connections.
async fn send_all(
    connections: Vec<Connection>,
    queue: &QueueName,
    count: u64,
) -> Result<Vec<Connection>> {
    let mut sending = JoinSet::new();
    for mut connection in connections {
        let queue = queue.clone();
        sending.spawn(async move {
            let reply_to = memory_replies();
            for _ in 0..count {
                let id = connection
                    .send_request(&queue, &reply_to, payload())
                    .await?;
                ensure!(id.is_some(), "queue {queue} is missing");
            }
            Ok(connection)
        });
    }
    let mut done = Vec::new();
    while let Some(connection) = sending.join_next().await {
        done.push(connection??);
    }
    Ok(done)
}

/// The reply queue named by the memory figure's requests.
fn memory_replies() -> QueueName {
    QueueName::from("bench.mem.replies")
}

/// A new connection logged in with `token`.
async fn open<C: Connector>(connector: &C, token: String) -> Result<Connection> {
    let mut connection = Connection::open(connector, &ConnectionConfig::default()).await?;
    connection.login(&token.into()).await?;
    Ok(connection)
}

/// Runs `make(0..count)` with at most [`SETUP_PARALLELISM`] at once; results in index order.
async fn setup_all<T, F, Fut>(count: usize, make: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(SETUP_PARALLELISM));
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let permits = Arc::clone(&permits);
        let made = make(index);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            made.await.map(|value| (index, value))
        });
    }
    let mut results = Vec::with_capacity(count);
    while let Some(result) = tasks.join_next().await {
        results.push(result??);
    }
    results.sort_by_key(|(index, _)| *index);
    Ok(results.into_iter().map(|(_, value)| value).collect())
}

/// Polls the switch's `/metrics` until at least `count` Transfers are parked, so that a
/// measurement starts only once every listener really waits.
async fn wait_for_blocked_transfers<C: Connector>(connector: &C, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut probe = Probe::open(connector).await?;
    loop {
        let blocked = probe.blocked_transfers().await?;
        if blocked >= count as u64 {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "only {blocked} of {count} transfers parked after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
