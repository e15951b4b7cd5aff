//! The abuse scenarios (docs/reliability.md): hostile and overloaded clients against the real
//! switch binary, each on a fresh switch, each measuring a well-behaved RPC pair (a caller and
//! a responder on their own queues, over the Unix socket) before and during the abuse.
//!
//! ```text
//! target/release/message-switch-bench --only abuse [--abuse-scale 0.1]
//! ```
//!
//! Every scenario checks the bounds it promises (memory, descriptors, that the pair and the
//! victims' messages get through, that the switch recovers); a failed check fails the run,
//! which is how `tests/abuse.rs` runs a reduced form of each. Latencies are reported, never
//! checked: they are the figure, and they depend on the machine.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use message_switch::client::{
    serve, Client, Connection, ConnectionConfig, Connector, Incoming, ServeOptions, TcpConnector,
    UnixConnector,
};
use message_switch::protocol::{QueueName, Request};

use crate::child::{rss_bytes, ChildProcess, ScratchDir};
use crate::measure::Latencies;
use crate::rpc::{client_config, payload, PAYLOAD};

/// A pair call slower than this fails the scenario: the pair was starved, not slowed.
const PAIR_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls of the pair's quiet measurement at full scale (the measurement during the abuse
/// makes at least a tenth as many).
const PAIR_QUIET_CALLS: usize = 2_000;
/// Connections opened or set up at once.
const PARALLELISM: usize = 64;
/// The most an idle session (connection, session, queue and parked Transfer) may cost.
const IDLE_SESSION_BYTES_MAX: u64 = 24 << 10;
/// How long the switch has to return to its baseline after churn, or to recover after
/// descriptor exhaustion.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long scenario 5 keeps connecting, past its hold, for the switch to run out of
/// descriptors on a slow machine.
const EXHAUSTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The scale of the scenarios: 1.0 is the issue's figures (1,000,000 flood requests, 100
/// stuck readers, 1,000 slow-header connections, 50,000 churn cycles, 1,000 connections
/// against 256 descriptors, 10,000 idle sessions).
#[derive(Clone, Copy, Debug)]
pub struct Scale(pub f64);

impl Scale {
    fn of(self, full: usize, least: usize) -> usize {
        ((full as f64 * self.0).round() as usize).max(least)
    }
}

/// One scenario's outcome.
pub struct Outcome {
    name: &'static str,
    quiet: Latencies,
    during: Latencies,
    figures: Vec<String>,
    failures: Vec<String>,
}

impl Outcome {
    fn new(name: &'static str, quiet: Latencies, during: Latencies) -> Outcome {
        Outcome {
            name,
            quiet,
            during,
            figures: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn figure(&mut self, text: String) {
        progress(&format!("{}: {text}", self.name));
        self.figures.push(text);
    }

    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            progress(&format!("{}: CHECK FAILED: {what}", self.name));
            self.failures.push(what);
        }
    }
}

/// Runs the scenarios numbered in `only` (all six if empty) at `scale` and returns their
/// report (Markdown); fails if any bound was not met, after printing the report.
pub async fn run(binary: &Path, scratch: &ScratchDir, scale: Scale, only: &[u8]) -> Result<String> {
    let wanted = |number: u8| only.is_empty() || only.contains(&number);
    let mut outcomes = Vec::new();
    if wanted(1) {
        outcomes.push(flood(binary, scratch, scale).await?);
    }
    if wanted(2) {
        outcomes.push(never_read(binary, scratch, scale).await?);
    }
    if wanted(3) {
        outcomes.push(slow_headers(binary, scratch, scale).await?);
    }
    if wanted(4) {
        outcomes.extend(churn(binary, scratch, scale).await?);
    }
    if wanted(5) {
        outcomes.push(descriptors(binary, scratch, scale).await?);
    }
    if wanted(6) {
        outcomes.push(idle_sessions(binary, scratch, scale).await?);
    }
    let report = render(&outcomes, scale);
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.failures.iter().map(move |f| format!("{}: {f}", o.name)))
        .collect();
    if !failures.is_empty() {
        print!("{report}");
        bail!("abuse checks failed:\n{}", failures.join("\n"));
    }
    Ok(report)
}

fn render(outcomes: &[Outcome], scale: Scale) -> String {
    let mut out = format!(
        "\n## Abuse scenarios (scale {})\n\n\
         | scenario | pair p50 quiet → during | ratio | pair p99 quiet → during | ratio | figures |\n\
         |---|---|---|---|---|---|\n",
        scale.0
    );
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    for outcome in outcomes {
        let (q50, d50) = (micros(outcome.quiet.p50()), micros(outcome.during.p50()));
        let (q99, d99) = (micros(outcome.quiet.p99()), micros(outcome.during.p99()));
        out.push_str(&format!(
            "| {} | {q50:.0} → {d50:.0} µs | {:.2} | {q99:.0} → {d99:.0} µs | {:.2} | {} |\n",
            outcome.name,
            d50 / q50.max(1.0),
            d99 / q99.max(1.0),
            outcome.figures.join("; ")
        ));
    }
    out
}

/// A switch for one scenario: TCP for the abusers, the Unix socket for the pair. With
/// `files_max`, it runs under `ulimit -n` (through bash, which execs it) and its stderr is
/// copied to `log` as well.
struct Target {
    process: ChildProcess,
    log: Option<PathBuf>,
}

impl Target {
    fn start(
        binary: &Path,
        scratch: &ScratchDir,
        name: &str,
        args: &[&str],
        files_max: Option<u64>,
    ) -> Result<Target> {
        let socket = scratch.path().join(format!("abuse-{name}.sock"));
        let mut switch_args: Vec<String> = vec![
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--path".into(),
            socket.display().to_string(),
        ];
        switch_args.extend(args.iter().map(|a| (*a).to_owned()));
        let (command, log) = match files_max {
            None => {
                let mut command = Command::new(binary);
                command.args(&switch_args);
                (command, None)
            }
            Some(files) => {
                let log = scratch.path().join(format!("abuse-{name}.log"));
                let mut command = Command::new("bash");
                command
                    .arg("-c")
                    .arg(format!(
                        "ulimit -n {files} && exec \"$0\" \"$@\" 2> >(tee -a '{}' >&2)",
                        log.display()
                    ))
                    .arg(binary)
                    .args(&switch_args);
                (command, Some(log))
            }
        };
        let mut command = command;
        command
            .env("RUST_LOG", "warn")
            .env_remove("TOKIO_WORKER_THREADS");
        let process = ChildProcess::spawn(&format!("switch abuse-{name}"), command)?;
        Ok(Target { process, log })
    }

    fn unix(&self) -> UnixConnector {
        UnixConnector::new(&self.process.unix)
    }

    fn tcp(&self) -> SocketAddr {
        self.process.tcp
    }

    fn rss(&self) -> Result<u64> {
        rss_bytes(self.process.pid())
    }

    /// The switch's stderr so far (empty without a log).
    fn log_text(&self) -> String {
        match &self.log {
            Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
            None => String::new(),
        }
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log_text().contains(needle)
    }

    fn open_files(&self) -> Result<usize> {
        let dir = format!("/proc/{}/fd", self.process.pid());
        Ok(std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {dir}"))?
            .count())
    }

    /// A gauge or counter of `/metrics`, read on a connection of its own.
    async fn metric(&self, name: &str) -> Result<f64> {
        let mut connection = Connection::open(&self.unix(), &ConnectionConfig::default()).await?;
        let body = connection.execute(&Request::Metrics).await?;
        let text = String::from_utf8_lossy(&body);
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|value| value.trim().parse().ok())
            .with_context(|| format!("no {name} in /metrics"))
    }
}

/// The well-behaved RPC pair: one responder (`serve`) and one caller on their own queue.
struct Pair {
    client: Client<UnixConnector>,
    queue: QueueName,
    calls: usize,
    _service: JoinSet<()>,
}

impl Pair {
    async fn open(target: &Target, scale: Scale) -> Result<Pair> {
        let connector = target.unix();
        let queue = QueueName::from("abuse.pair");
        let options = ServeOptions {
            config: client_config("abuse-pair-service".to_owned()),
            concurrency: NonZeroUsize::MIN,
        };
        let mut service = JoinSet::new();
        let served = serve(
            connector.clone(),
            queue.clone(),
            options,
            |incoming: Incoming| async move { incoming.payload },
        );
        service.spawn(async move {
            let _ = served.await;
        });
        let client = Client::connect(connector, client_config("abuse-pair-caller".to_owned()))
            .await
            .context("the pair's caller cannot connect")?;
        let pair = Pair {
            client,
            queue,
            calls: scale.of(PAIR_QUIET_CALLS, 100),
            _service: service,
        };
        // The responder may not be listening yet: the first call waits for it.
        pair.call().await?;
        Ok(pair)
    }

    async fn call(&self) -> Result<Duration> {
        let start = Instant::now();
        let response = self
            .client
            .call(&self.queue, payload(), Some(PAIR_CALL_TIMEOUT))
            .await
            .context("a call of the well-behaved pair failed")?;
        if response.len() != PAYLOAD.len() {
            bail!("the pair got a wrong response");
        }
        Ok(start.elapsed())
    }

    async fn quiet(&self) -> Result<Latencies> {
        let mut samples = Vec::with_capacity(self.calls);
        for _ in 0..self.calls {
            samples.push(nanos(self.call().await?));
        }
        Ok(Latencies::from_samples([samples]))
    }

    /// Calls one after another until `done` is set (and at least a tenth of the quiet calls).
    async fn during(&self, done: &AtomicBool) -> Result<Latencies> {
        let mut samples = Vec::new();
        while !done.load(Ordering::Acquire) || samples.len() < self.calls / 10 {
            samples.push(nanos(self.call().await?));
        }
        Ok(Latencies::from_samples([samples]))
    }
}

/// Runs `abuse` while the pair calls; returns the pair's latencies and the abuse's result.
async fn with_pair<T, F>(pair: &Pair, abuse: F) -> Result<(Latencies, T)>
where
    F: std::future::Future<Output = Result<T>>,
{
    let done = AtomicBool::new(false);
    let abuse = async {
        let result = abuse.await;
        done.store(true, Ordering::Release);
        result
    };
    let (during, result) = tokio::join!(pair.during(&done), abuse);
    Ok((during?, result?))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// A logged-in connection of the client library.
async fn session<C: Connector>(connector: &C, token: String) -> Result<Connection> {
    let mut connection = Connection::open(connector, &ConnectionConfig::default()).await?;
    connection.login(&token.into()).await?;
    Ok(connection)
}

/// Scenario 1: Four connections send requests to one queue as fast as they can, past its
/// per-queue byte limit (issue 19), with no `--queue-messages-max`: the flooded queue refuses
/// its own Sends and the pair's queues none (a refused call of the pair fails the run).
async fn flood(binary: &Path, scratch: &ScratchDir, scale: Scale) -> Result<Outcome> {
    const FLOODERS: usize = 4;
    let requests = scale.of(1_000_000, 4_000);
    // A quarter of what the flood sends, up to 64 MiB; the per-queue limit keeps its default,
    // a quarter of that, so the flooded queue always reaches it and never the store's.
    let stored_bytes_max = (requests as u64 * 1024 / 4).min(64 << 20);
    let queue_bytes_max =
        message_switch::engine::default_queue_bytes_max(stored_bytes_max as usize) as u64;
    progress(&format!(
        "flood: {requests} requests of 1 KiB by {FLOODERS} connections"
    ));
    let limit = stored_bytes_max.to_string();
    let target = Target::start(
        binary,
        scratch,
        "flood",
        &["--stored-bytes-max", &limit],
        None,
    )?;
    let pair = Pair::open(&target, scale).await?;
    let quiet = pair.quiet().await?;
    let rss_before = target.rss()?;
    let peak = Arc::new(AtomicU64::new(rss_before));
    let accepted = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let pid = target.process.pid();
    let connector = TcpConnector::new(target.tcp().to_string());
    // Bounded by time as well as by count: once the queue is full, the switch holds each
    // flooder's refusals back (--refusal-delay-max), so the count alone would take hours.
    let flood_end = Instant::now() + Duration::from_secs_f64((30.0 * scale.0).clamp(3.0, 30.0));
    let flooding = async {
        let mut flooders = JoinSet::new();
        for index in 0..FLOODERS {
            let connector = connector.clone();
            let (accepted, refused) = (accepted.clone(), refused.clone());
            let count = requests / FLOODERS;
            flooders.spawn(async move {
                let mut connection = session(&connector, format!("abuse-flooder:{index}")).await?;
                let queue = QueueName::from("abuse.flooded");
                connection.create_persistent(&queue).await?;
                let body = Bytes::from(vec![b'x'; 1024]);
                for _ in 0..count {
                    if Instant::now() >= flood_end {
                        break;
                    }
                    match connection.send_request(&queue, &queue, body.clone()).await {
                        Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                        Err(_) if connection.is_usable() => refused.fetch_add(1, Ordering::Relaxed),
                        Err(error) => return Err(error.into()),
                    };
                }
                anyhow::Ok(())
            });
        }
        let sampling = async {
            loop {
                if let Ok(rss) = rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let joined = async {
            while let Some(result) = flooders.join_next().await {
                result.context("a flooder panicked")??;
            }
            anyhow::Ok(())
        };
        tokio::select! {
            result = joined => result,
            () = sampling => unreachable!("the sampler never ends"),
        }
    };
    let started = Instant::now();
    let (during, ()) = with_pair(&pair, flooding).await?;
    let elapsed = started.elapsed();
    let peak = peak.load(Ordering::Relaxed).max(target.rss()?);
    let stored = target
        .metric("message_switch_payload_bytes_stored")
        .await
        .unwrap_or(f64::NAN);
    let mut outcome = Outcome::new("1 flood", quiet, during);
    let (accepted, refused) = (
        accepted.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    outcome.figure(format!(
        "{accepted} stored + {refused} refused in {:.1} s ({:.0} requests/s); peak RSS {:.0} MiB (start {:.0} MiB) \
         with a {:.0} MiB stored-bytes limit, its default {:.0} MiB per queue and no \
         --queue-messages-max; stored {:.0} MiB; the pair's {} calls never refused",
        elapsed.as_secs_f64(),
        (accepted + refused) as f64 / elapsed.as_secs_f64(),
        mib(peak),
        mib(rss_before),
        mib(stored_bytes_max),
        mib(queue_bytes_max),
        stored / f64::from(1 << 20),
        outcome.quiet.count() + outcome.during.count(),
    ));
    // The limit bounds payload bytes; each stored message also costs its bookkeeping and
    // the allocator's slack, which is what the overhead below has to cover.
    let overhead = (64 << 20) + accepted * 512;
    outcome.check(
        peak <= rss_before + stored_bytes_max + overhead,
        format!(
            "peak RSS {:.0} MiB is above start + limit + 64 MiB + 512 B per stored message",
            mib(peak)
        ),
    );
    outcome.check(
        refused > 0 || accepted < requests as u64,
        "the limit never refused a send".into(),
    );
    // What the flooded queue holds is its own limit, not the store's: every other queue
    // still has the rest of the store.
    outcome.check(
        accepted * 1024 <= queue_bytes_max,
        format!(
            "the flooded queue holds {accepted} KiB, above its limit of {:.0} MiB",
            mib(queue_bytes_max)
        ),
    );
    outcome.check(
        stored <= (stored_bytes_max - queue_bytes_max) as f64,
        format!(
            "{:.0} MiB stored: the flood reached into the last quarter of the store",
            stored / f64::from(1 << 20)
        ),
    );
    Ok(outcome)
}

/// Scenario 2: Connections park a Transfer on a busy queue and never read the reply, or stop halfway
/// through a 4 MiB one; a healthy listener must still get every message.
async fn never_read(binary: &Path, scratch: &ScratchDir, scale: Scale) -> Result<Outcome> {
    const MESSAGE_BYTES: usize = 4 << 20;
    let readers = scale.of(100, 4);
    progress(&format!(
        "never-read: {readers} stuck readers of a 4 MiB reply"
    ));
    let target = Target::start(binary, scratch, "never-read", &[], None)?;
    let pair = Pair::open(&target, scale).await?;
    let quiet = pair.quiet().await?;
    let queue = QueueName::from("abuse.busy");
    let mut producer = session(&target.unix(), "abuse-producer".to_owned()).await?;
    producer.create_persistent(&queue).await?;
    let rss_before = target.rss()?;
    let tcp = target.tcp();
    let mut stuck = Vec::with_capacity(readers);
    for index in 0..readers {
        let mut stream = TcpStream::connect(tcp).await?;
        let body = br#"{"timeout":600.0,"queues":["abuse.busy"]}"#;
        let requests = format!(
            "GET /login/abuse-stuck-{index} HTTP/1.1\r\nhost: bench\r\n\r\n\
             POST /transfer HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(requests.as_bytes()).await?;
        stream.write_all(body).await?;
        stuck.push(stream);
    }
    let sending = async {
        producer
            .send_request(&queue, &queue, Bytes::from(vec![b'm'; MESSAGE_BYTES]))
            .await?;
        for _ in 0..99 {
            producer.send_request(&queue, &queue, payload()).await?;
        }
        // Half the readers read half the reply and stop; the others never read at all.
        let mut half = vec![0u8; MESSAGE_BYTES / 2];
        for stream in stuck.iter_mut().step_by(2) {
            tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut half))
                .await
                .context("a stuck reader could not read half of its reply")??;
        }
        // Let the switch write what the sockets take.
        tokio::time::sleep(Duration::from_millis(500)).await;
        anyhow::Ok(())
    };
    let (during, ()) = with_pair(&pair, sending).await?;
    let rss_stuck = target.rss()?;
    let mut listener = session(&target.unix(), "abuse-healthy".to_owned()).await?;
    let mut delivered = 0;
    let mut from = None;
    while delivered < 100 {
        let reply = listener
            .transfer(from, Duration::from_secs(5), std::slice::from_ref(&queue))
            .await?;
        if reply.messages.is_empty() {
            break;
        }
        delivered += reply.messages.len();
        from = Some(reply.next);
    }
    let per_reader = rss_stuck.saturating_sub(rss_before) / readers as u64;
    let mut outcome = Outcome::new("2 never-read", quiet, during);
    outcome.figure(format!(
        "{readers} stuck readers: RSS {:.0} → {:.0} MiB, {:.2} MiB per reader (reply {} MiB); \
         healthy listener got {delivered}/100",
        mib(rss_before),
        mib(rss_stuck),
        mib(per_reader),
        MESSAGE_BYTES >> 20
    ));
    outcome.check(
        delivered == 100,
        format!("the healthy listener got {delivered} of 100 messages"),
    );
    // The reply is streamed: a stuck reader pins hyper's write buffer (about 400 KiB at
    // most) and one frame, not its 4 MiB reply. The fixed 16 MiB covers the allocator's
    // growth, which dominates at a small scale.
    let growth = rss_stuck.saturating_sub(rss_before);
    outcome.check(
        growth <= (16 << 20) + readers as u64 * (768 << 10),
        format!(
            "RSS grew {:.1} MiB with {readers} stuck readers: above 16 MiB + 768 KiB each",
            mib(growth)
        ),
    );
    drop(stuck);
    Ok(outcome)
}

/// Scenario 3: Connections send one byte of a request line per second; the connection limit and the
/// request-head timeout must protect the switch, and an idle session must survive.
async fn slow_headers(binary: &Path, scratch: &ScratchDir, scale: Scale) -> Result<Outcome> {
    const HEAD_TIMEOUT_S: u64 = 5;
    let dribblers = scale.of(1_000, 20);
    let limit = (dribblers / 2).max(10).to_string();
    progress(&format!(
        "slow headers: {dribblers} connections at 1 byte/s, limit {limit}, head timeout {HEAD_TIMEOUT_S} s"
    ));
    let timeout = HEAD_TIMEOUT_S.to_string();
    let target = Target::start(
        binary,
        scratch,
        "slow-headers",
        &[
            "--connections-max",
            &limit,
            "--request-head-timeout",
            &timeout,
        ],
        None,
    )?;
    let pair = Pair::open(&target, scale).await?;
    let quiet = pair.quiet().await?;
    let mut idle = session(&target.unix(), "abuse-idle-session".to_owned()).await?;
    let files_before = target.open_files()?;
    let tcp = target.tcp();
    let closed = Arc::new(AtomicU64::new(0));
    let dribbling = async {
        let mut tasks = JoinSet::new();
        for _ in 0..dribblers {
            let closed = closed.clone();
            tasks.spawn(async move {
                let Ok(mut stream) = TcpStream::connect(tcp).await else {
                    return;
                };
                // Three times the head timeout: the switch must close the connection first.
                for _ in 0..HEAD_TIMEOUT_S * 3 {
                    if stream.write_all(b"G").await.is_err() {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    let mut byte = [0u8; 1];
                    // A 429 (over the limit) may be read here first; the close follows.
                    let read =
                        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await;
                    if let Ok(Ok(0) | Err(_)) = read {
                        closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        anyhow::Ok(())
    };
    let (during, ()) = with_pair(&pair, dribbling).await?;
    let closed = closed.load(Ordering::Relaxed);
    let survived = idle.list(&"abuse.".into(), false).await.is_ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let files_after = target.open_files()?;
    let mut outcome = Outcome::new("3 slow headers", quiet, during);
    outcome.figure(format!(
        "{closed}/{dribblers} dribbling connections closed by the switch within {}s; \
         switch descriptors {files_before} before, {files_after} after; idle session survived: {survived}",
        HEAD_TIMEOUT_S * 3
    ));
    outcome.check(
        closed == dribblers as u64,
        format!("only {closed} of {dribblers} slow connections were closed"),
    );
    outcome.check(survived, "the idle keep-alive session was closed".into());
    outcome.check(
        files_after <= files_before + 2,
        format!("descriptors {files_before} → {files_after}"),
    );
    Ok(outcome)
}

/// Scenario 4: Connect, log in, create a transient queue, close, on 64 connections at once:
/// the pair must not notice, and the switch must return to its baseline.
///
/// The churner connects over TCP and the pair over the Unix socket, so the switch sees them
/// as two clients (`ip=127.0.0.1` and this process), as it would a monitoring script on the
/// network or in another process. Run twice: with the switch's default per-client limits
/// (the churner is held back to its connection rate) and with the rate limit off
/// (`--client-connects-per-second 0`: only the fair scheduling protects the pair).
async fn churn(binary: &Path, scratch: &ScratchDir, scale: Scale) -> Result<Vec<Outcome>> {
    let mut outcomes = Vec::new();
    for (name, args) in [
        ("4 churn", &[][..]),
        (
            "4 churn, no rate limit",
            &["--client-connects-per-second", "0"][..],
        ),
    ] {
        outcomes.push(churn_with(binary, scratch, scale, name, args).await?);
    }
    Ok(outcomes)
}

async fn churn_with(
    binary: &Path,
    scratch: &ScratchDir,
    scale: Scale,
    name: &'static str,
    args: &[&str],
) -> Result<Outcome> {
    let cycles = scale.of(50_000, 500);
    // Held back to its rate, the churner would take minutes for the cycles: the window is
    // bounded in time as well.
    let window = Duration::from_secs_f64((10.0 * scale.0).max(3.0));
    progress(&format!(
        "{name}: {cycles} cycles or {:.0} s",
        window.as_secs_f64()
    ));
    let target = Target::start(binary, scratch, "churn", args, None)?;
    let pair = Pair::open(&target, scale).await?;
    let quiet = pair.quiet().await?;
    let baseline = Baseline::read(&target).await?;
    let connector = TcpConnector::new(target.tcp().to_string());
    let completed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let churning = async {
        let permits = Arc::new(Semaphore::new(PARALLELISM));
        let mut tasks = JoinSet::new();
        let until = Instant::now() + window;
        for index in 0..cycles {
            let permit = permits.clone().acquire_owned().await?;
            if Instant::now() >= until {
                break;
            }
            let connector = connector.clone();
            let (completed, refused) = (completed.clone(), refused.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let cycle = async {
                    let mut connection =
                        session(&connector, format!("abuse-churn:{index}")).await?;
                    connection
                        .create_transient(&QueueName::from(format!("abuse.churn.{index}")))
                        .await?;
                    anyhow::Ok(())
                };
                match cycle.await {
                    Ok(()) => completed.fetch_add(1, Ordering::Relaxed),
                    Err(error) if refused_by_limit(&error) => {
                        refused.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(error) => return Err(error),
                };
                anyhow::Ok(())
            });
            while let Some(done) = tasks.try_join_next() {
                done.context("a churn task panicked")??;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done.context("a churn task panicked")??;
        }
        anyhow::Ok(())
    };
    let started = Instant::now();
    let (during, ()) = with_pair(&pair, churning).await?;
    let elapsed = started.elapsed();
    let settled_at = Instant::now();
    let mut after = Baseline::read(&target).await?;
    while !after.counts_match(&baseline) && settled_at.elapsed() < SETTLE_TIMEOUT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = Baseline::read(&target).await?;
    }
    let settled = settled_at.elapsed();
    let completed = completed.load(Ordering::Relaxed);
    let refused = refused.load(Ordering::Relaxed);
    let mut outcome = Outcome::new(name, quiet, during);
    outcome.figure(format!(
        "churner: {completed} cycles ({refused} refused) in {:.1} s = {:.0} cycles/s; \
         after {:.1} s: descriptors {} → {}, sessions {} → {}, \
         queues {} → {}, connections {} → {}, RSS {:.1} → {:.1} MiB",
        elapsed.as_secs_f64(),
        completed as f64 / elapsed.as_secs_f64(),
        settled.as_secs_f64(),
        baseline.files,
        after.files,
        baseline.sessions,
        after.sessions,
        baseline.queues,
        after.queues,
        baseline.connections,
        after.connections,
        mib(baseline.rss),
        mib(after.rss)
    ));
    outcome.check(completed > 0, "no churn cycle completed".into());
    if args.is_empty() {
        // Under the default limits the churner, one client, cannot open connections faster
        // than its burst plus its rate (each cycle is one connection).
        let limits = message_switch::server::ClientLimits::default();
        let allowed =
            f64::from(limits.connect_burst) + limits.connects_per_second * elapsed.as_secs_f64();
        outcome.check(
            completed as f64 <= allowed,
            format!(
                "the churner completed {completed} cycles, more than its connection rate allows ({allowed:.0})"
            ),
        );
    }
    outcome.check(
        after.counts_match(&baseline),
        "descriptors, sessions, queues or connections did not return to the baseline".into(),
    );
    outcome.check(
        after.rss <= baseline.rss + (16 << 20),
        format!(
            "RSS grew by {:.1} MiB",
            mib(after.rss.saturating_sub(baseline.rss))
        ),
    );
    Ok(outcome)
}

/// Whether a churn cycle failed because the switch refused the connection (429), which a
/// client over its limits must expect, rather than for a reason that fails the scenario.
fn refused_by_limit(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<message_switch::client::Error>(),
        Some(message_switch::client::Error::Status { status: 429, .. })
    )
}

/// The counts churn must return to.
struct Baseline {
    files: usize,
    sessions: f64,
    queues: f64,
    connections: f64,
    rss: u64,
}

impl Baseline {
    async fn read(target: &Target) -> Result<Baseline> {
        Ok(Baseline {
            files: target.open_files()?,
            sessions: target.metric("message_switch_sessions").await?,
            queues: target.metric("message_switch_queues").await?,
            connections: target.metric("message_switch_connections").await?,
            rss: target.rss()?,
        })
    }

    fn counts_match(&self, other: &Baseline) -> bool {
        self.files == other.files
            && self.sessions == other.sessions
            && self.queues == other.queues
            && self.connections == other.connections
    }
}

/// Scenario 5: The switch under `ulimit -n 256` gets more connections than it has descriptors: it
/// keeps serving what it has, logs once per interval, and recovers.
async fn descriptors(binary: &Path, scratch: &ScratchDir, scale: Scale) -> Result<Outcome> {
    const FILES_MAX: u64 = 256;
    let connections = scale.of(1_000, 300);
    progress(&format!(
        "descriptors: {connections} connections against ulimit -n {FILES_MAX}"
    ));
    // The connections all come from one address, one client: under the default per-client
    // limits it could not exhaust the descriptors at all (it is held back and refused first),
    // so they are turned off to let it stand for many clients.
    let target = Target::start(
        binary,
        scratch,
        "descriptors",
        &[
            "--client-connections-max",
            "50000",
            "--client-connects-per-second",
            "0",
        ],
        Some(FILES_MAX),
    )?;
    let pair = Pair::open(&target, scale).await?;
    let quiet = pair.quiet().await?;
    let tcp = target.tcp();
    // Past one logging interval (10 s) at full scale.
    let hold = Duration::from_secs_f64((12.0 * scale.0).clamp(2.0, 12.0));
    let exhausting = async {
        let started = Instant::now();
        let mut streams = connect_all(tcp, connections).await;
        // A loaded machine may accept the first wave more slowly than its connects time out,
        // so that the switch never runs out of descriptors: connect again (at most as many
        // times more, within a bound) until the switch has said that it did.
        let deadline = started + hold + EXHAUSTION_TIMEOUT;
        let mut attempts = connections;
        while !target.log_contains("accept failed") && attempts > 0 && Instant::now() < deadline {
            let wave = attempts.min(64);
            attempts -= wave;
            streams.extend(connect_all(tcp, wave).await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Keep the switch out of descriptors past one logging interval.
        tokio::time::sleep(hold.saturating_sub(started.elapsed())).await;
        anyhow::Ok((streams, started.elapsed()))
    };
    let (during, (streams, exhausted_for)) = with_pair(&pair, exhausting).await?;
    let opened = streams.len();
    let files_full = target.open_files()?;
    drop(streams);
    let recovered_at = Instant::now();
    let mut recovered = false;
    while recovered_at.elapsed() < SETTLE_TIMEOUT {
        let fresh = tokio::time::timeout(
            Duration::from_secs(1),
            session(
                &TcpConnector::new(tcp.to_string()),
                "abuse-after".to_owned(),
            ),
        )
        .await;
        if matches!(fresh, Ok(Ok(_))) {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovery = recovered_at.elapsed();
    let log = target.log_text();
    let warnings = log.matches("accept failed").count();
    let recoveries = log.matches("accepting connections again").count();
    let mut outcome = Outcome::new("5 descriptors", quiet, during);
    outcome.figure(format!(
        "{opened} connections made (switch at {files_full} descriptors of {FILES_MAX}); \
         {warnings} accept warnings in {:.0} s; new session {} after {:.1} s; recovery logged {recoveries}×",
        exhausted_for.as_secs_f64(),
        if recovered { "accepted" } else { "NOT accepted" },
        recovery.as_secs_f64()
    ));
    outcome.check(
        recovered,
        "no new session after the descriptors were freed".into(),
    );
    // One warning per 10 s interval, plus one for a run starting just before a boundary.
    outcome.check(
        (1..=3).contains(&warnings),
        format!(
            "{warnings} accept warnings in {:.0} s (expected one per 10 s)",
            exhausted_for.as_secs_f64()
        ),
    );
    Ok(outcome)
}

/// Opens `count` TCP connections to `tcp` all at once and returns those made within 1 s.
/// Past the switch's descriptors the kernel still completes connections into the listen
/// backlog, until that is full too; the rest time out. All at once, so that the timeouts
/// overlap.
async fn connect_all(tcp: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut connecting = JoinSet::new();
    for _ in 0..count {
        connecting.spawn(tokio::time::timeout(
            Duration::from_secs(1),
            TcpStream::connect(tcp),
        ));
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(connected) = connecting.join_next().await {
        if let Ok(Ok(Ok(stream))) = connected {
            streams.push(stream);
        }
    }
    streams
}

/// Scenario 6: Many idle sessions, each with a connection and a parked Transfer: the memory each costs.
async fn idle_sessions(binary: &Path, scratch: &ScratchDir, scale: Scale) -> Result<Outcome> {
    let sessions = scale.of(10_000, 1_000);
    progress(&format!("idle sessions: {sessions}"));
    let target = Target::start(
        binary,
        scratch,
        "idle",
        // All the sessions are this process's: one client, far over the per-client limits.
        &[
            "--connections-max",
            "50000",
            "--client-connections-max",
            "50000",
            "--client-connects-per-second",
            "0",
        ],
        None,
    )?;
    let pair = Pair::open(&target, scale).await?;
    let quiet = pair.quiet().await?;
    let rss_before = target.rss()?;
    let connector = target.unix();
    let permits = Arc::new(Semaphore::new(PARALLELISM));
    let mut parked = JoinSet::new();
    for index in 0..sessions {
        let permit = permits.clone().acquire_owned().await?;
        let connector = connector.clone();
        parked.spawn(async move {
            let queue = QueueName::from(format!("abuse.idle.{index}"));
            let connection = async {
                let mut connection = session(&connector, format!("abuse-idle:{index}")).await?;
                connection.create_persistent(&queue).await?;
                anyhow::Ok(connection)
            }
            .await;
            drop(permit);
            let Ok(mut connection) = connection else {
                return;
            };
            let queues = [queue];
            while connection
                .transfer(None, Duration::from_secs(3600), &queues)
                .await
                .is_ok()
            {}
        });
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let blocked = target.metric("message_switch_blocked_transfers").await?;
        if blocked >= sessions as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {blocked} of {sessions} transfers parked after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = AtomicBool::new(true);
    let during = pair.during(&done).await?;
    let rss_after = target.rss()?;
    let per_session = rss_after.saturating_sub(rss_before) as f64 / sessions as f64;
    let mut outcome = Outcome::new("6 idle sessions", quiet, during);
    outcome.figure(format!(
        "{sessions} idle sessions with a parked Transfer: RSS {:.1} → {:.1} MiB, {:.2} KiB each \
         (connection, session, queue, Transfer)",
        mib(rss_before),
        mib(rss_after),
        per_session / 1024.0
    ));
    // hyper 1.x alone costs about 10 KiB per connection (two 8 KiB buffers, of which the
    // touched pages count; docs/reliability.md): the bound catches a regression above that
    // floor plus the session, queue and Transfer, not the issue's 4 KiB target.
    outcome.check(
        per_session <= IDLE_SESSION_BYTES_MAX as f64,
        format!(
            "{:.2} KiB per idle session is above {} KiB",
            per_session / 1024.0,
            IDLE_SESSION_BYTES_MAX / 1024
        ),
    );
    drop(parked);
    Ok(outcome)
}

fn progress(text: &str) {
    eprintln!("[abuse] {text}");
}
