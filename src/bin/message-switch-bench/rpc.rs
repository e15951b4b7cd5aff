//! The round-trip workloads: the floor (echo round trips) and RPC through the switch with the
//! crate's own client pair (`Client::call` callers and a `serve` responder).

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use bytes::Bytes;
use tokio::task::JoinSet;

use message_switch::client::{serve, Client, ClientConfig, Connector, Incoming, ServeOptions};
use message_switch::protocol::QueueName;

use crate::echo::EchoConnection;
use crate::measure::{run_window, Flags, Recorder, Samples, Throughput, Timing};
use crate::probe::Probe;

/// Every request and response body: 100 bytes, shaped like a small JSON-RPC call.
pub const PAYLOAD: &[u8] =
    br#"{"method":"VM.get_record","params":["OpaqueRef:0f6c5a8e-3f4b-4c8e-9d61-7a"],"id":42,"jsonrpc":"2.0"}"#;
const _: () = assert!(PAYLOAD.len() == 100);

/// A call that takes longer than this fails the run: something is broken, not slow.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The 100-byte payload.
pub fn payload() -> Bytes {
    Bytes::from_static(PAYLOAD)
}

/// A client configuration with the given session token and otherwise the defaults.
pub fn client_config(token: String) -> ClientConfig {
    ClientConfig {
        token: token.into(),
        ..ClientConfig::default()
    }
}

/// `concurrency` keep-alive connections to the echo server (process `echo_pid`), each doing
/// one round trip after another.
pub async fn floor<C: Connector>(
    connector: C,
    echo_pid: u32,
    concurrency: usize,
    timing: Timing,
) -> Result<Throughput> {
    let mut connections = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        connections.push(EchoConnection::open(&connector).await?);
    }
    let flags = Arc::new(Flags::default());
    let mut workers = JoinSet::new();
    for mut connection in connections {
        let mut recorder = Recorder::new(&flags);
        workers.spawn(async move {
            while recorder.running() {
                let start = Instant::now();
                let echoed = connection.round_trip(payload()).await?;
                ensure!(echoed.len() == PAYLOAD.len(), "short echo");
                recorder.record(start);
            }
            Ok(recorder.into_samples())
        });
    }
    let cpu = run_window(&flags, timing, echo_pid).await?;
    Ok(Throughput::new(join_samples(workers).await?, cpu))
}

/// RPC through the switch (process `switch_pid`): one `serve` responder on its own queue,
/// handling up to `concurrency` requests at once and echoing each body, and `concurrency`
/// independent [`Client`]s (each with its own session, reply queue and two connections),
/// each making one call after another. `tag` keeps the queues and tokens of different cells
/// apart on one switch.
pub async fn rpc<C: Connector>(
    connector: C,
    switch_pid: u32,
    concurrency: usize,
    timing: Timing,
    tag: &str,
) -> Result<Throughput> {
    let queue = QueueName::from(format!("bench.rpc.{tag}"));
    let options = ServeOptions {
        config: client_config(format!("bench-service:{tag}")),
        concurrency: NonZeroUsize::new(concurrency).unwrap_or(NonZeroUsize::MIN),
    };
    let mut service = JoinSet::new();
    service.spawn(serve(
        connector.clone(),
        queue.clone(),
        options,
        |incoming: Incoming| async move { incoming.payload },
    ));
    let mut connecting = JoinSet::new();
    for index in 0..concurrency {
        let config = client_config(format!("bench-caller:{tag}.{index}"));
        connecting.spawn(Client::connect(connector.clone(), config));
    }
    let mut callers = Vec::with_capacity(concurrency);
    while let Some(client) = connecting.join_next().await {
        callers.push(LibraryCaller {
            client: client?.context("a caller cannot connect")?,
            queue: queue.clone(),
        });
    }
    let measured = measure_calls(&connector, switch_pid, timing, callers).await;
    // Dropping the JoinSet stops the responder and its handlers.
    drop(service);
    measured
}

/// One caller of an RPC workload: each [`Caller::call`] is one complete RPC (request sent,
/// response received and checked).
pub trait Caller: Send + 'static {
    /// Makes one RPC; an error fails the cell.
    fn call(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// A caller using the crate's own client library (`Client::call`).
struct LibraryCaller<C: Connector> {
    client: Client<C>,
    queue: QueueName,
}

impl<C: Connector> Caller for LibraryCaller<C> {
    async fn call(&mut self) -> Result<()> {
        let response = self
            .client
            .call(&self.queue, payload(), Some(CALL_TIMEOUT))
            .await?;
        ensure!(response.len() == PAYLOAD.len(), "wrong response");
        Ok(())
    }
}

/// Runs `callers` (their service already serving), each making one call after another, and
/// measures one window: calls per second, their latencies, the switch's CPU, and how many
/// HTTP requests the switch served and journal syncs it made per call (from its `/metrics`,
/// read through `connector`, over the whole cell).
pub async fn measure_calls<C: Connector, K: Caller>(
    connector: &C,
    switch_pid: u32,
    timing: Timing,
    callers: Vec<K>,
) -> Result<Throughput> {
    let mut probe = Probe::open(connector).await?;
    let before = probe.counters().await?;
    let flags = Arc::new(Flags::default());
    let mut workers = JoinSet::new();
    for mut caller in callers {
        let mut recorder = Recorder::new(&flags);
        workers.spawn(async move {
            while recorder.running() {
                let start = Instant::now();
                caller.call().await?;
                recorder.record(start);
            }
            Ok(recorder.into_samples())
        });
    }
    let cpu = run_window(&flags, timing, switch_pid).await?;
    let samples = join_samples(workers).await?;
    let after = probe.counters().await?;
    let calls = samples.iter().map(|s| s.operations).sum::<u64>().max(1) as f64;
    let mut measured = Throughput::new(samples, cpu);
    measured.requests_per_operation = Some((after.requests - before.requests) as f64 / calls);
    measured.syncs_per_operation = after
        .syncs
        .zip(before.syncs)
        .map(|(after, before)| (after - before) as f64 / calls);
    Ok(measured)
}

/// Waits for every worker and gathers their samples; the first failure fails the cell.
pub async fn join_samples(mut workers: JoinSet<Result<Samples>>) -> Result<Vec<Samples>> {
    let mut samples = Vec::with_capacity(workers.len());
    while let Some(result) = workers.join_next().await {
        samples.push(result.context("a worker panicked")??);
    }
    Ok(samples)
}
