//! `message-switch-bench`: measures the switch against the floor of plain HTTP/1.1, side by
//! side in one run (docs/performance.md explains every figure).
//!
//! ```text
//! cargo build --release --bins && target/release/message-switch-bench [--quick]
//! ```
//!
//! The switch under test is the release `message-switch` binary next to this executable, run
//! as a child process listening on loopback TCP (port 0) and a Unix socket in a scratch
//! directory, once without and once with `--statedir`. The floor is a trivial hyper echo
//! server, run as a child process too (this binary, re-executed with the hidden
//! `echo-server` subcommand), so that both servers are measured the same way: their CPU time
//! from `/proc/PID/stat`, their memory from `/proc/PID/status`. The load generator (this
//! process) uses the crate's own client library.
//!
//! Sections, in order: floor and RPC cells interleaved per transport and concurrency (so that
//! a cell and its floor see the same background load on a shared machine), fan-out, the cost
//! of a Send with idle waiters, memory. The report (Markdown) goes to stdout, progress to
//! stderr.

mod abuse;
mod child;
mod echo;
mod fsync;
mod measure;
mod original;
mod pattern;
mod probe;
mod repeats;
mod report;
mod rpc;
mod scale;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use message_switch::client::{Connection, ConnectionConfig, TcpConnector, UnixConnector};

use child::{ChildProcess, ScratchDir};
use measure::{Throughput, Timing};
use report::Report;

/// Measures the message switch against plain HTTP/1.1 round trips, side by side in one run.
#[derive(Parser, Debug)]
#[command(name = "message-switch-bench", version, about, long_about = None)]
struct Args {
    #[command(subcommand)]
    command: Option<Internal>,

    /// A short run (well under 30 s): shorter windows, fewer messages for the memory figure.
    /// Numbers are noisier; use it as a smoke test.
    #[arg(long)]
    quick: bool,

    /// The switch binary. Default: `message-switch` next to this executable.
    #[arg(long, value_name = "PATH")]
    switch: Option<PathBuf>,

    /// Run only these sections.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SECTION")]
    only: Vec<Section>,

    /// Concurrency levels of the floor and RPC cells.
    #[arg(long, value_delimiter = ',', value_name = "N", default_values_t = [1, 16, 256])]
    concurrency: Vec<usize>,

    /// Transports of the floor and RPC cells.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "T",
          default_values_t = [Transport::Unix, Transport::Tcp])]
    transport: Vec<Transport>,

    /// Switch storage modes of the RPC cells: `memory` (no flag), `statedir` (`--statedir`
    /// in the scratch directory) and `statedir-lazy` (also `--ack-sync lazy`).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "S",
          default_values_t = [Storage::Memory, Storage::Statedir])]
    storage: Vec<Storage>,

    /// Seconds of load before each measurement window. Default: 0.5 (quick: 0.15).
    #[arg(long, value_name = "SECONDS")]
    warmup: Option<f64>,

    /// Seconds each measurement window lasts. Default: 2 (quick: 0.5).
    #[arg(long, value_name = "SECONDS")]
    window: Option<f64>,

    /// Messages stored for the memory figure. Default: 1,000,000 (quick: 100,000).
    #[arg(long, value_name = "N")]
    messages: Option<u64>,

    /// Idle Transfers parked for the send-cost figure.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    idle: usize,

    /// Queues (each with one listener) of the fan-out figure.
    #[arg(long, value_name = "N", default_value_t = 1_000)]
    fanout_queues: usize,

    /// Runtime threads of the switch (`--threads N`) and of the echo server: 1 is tokio's
    /// current-thread runtime, more a multi-threaded one with that many workers. With several
    /// values the floor, RPC and real-pattern cells run once per value, side by side; the
    /// other sections use the first.
    #[arg(long, value_delimiter = ',', value_name = "N", default_values_t = [1, 2],
          value_parser = clap::value_parser!(u16).range(1..=64))]
    server_threads: Vec<u16>,

    /// Concurrency levels (callers) of the real-pattern cells (Unix socket only).
    #[arg(long, value_delimiter = ',', value_name = "N", default_values_t = [1, 16])]
    real_concurrency: Vec<usize>,

    /// With --statedir: the journal size at which the durable switches compact. Smaller
    /// than the switch's default, so that compaction happens during the durable cells and
    /// their longest pause includes it.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 20)]
    compaction_bytes_min: u64,

    /// Scale of the abuse scenarios (`--only abuse`): 1 is the full figures of
    /// docs/reliability.md; tests/abuse.rs runs a small fraction.
    #[arg(long, value_name = "FACTOR", default_value_t = 1.0)]
    abuse_scale: f64,

    /// Which abuse scenarios to run (numbers 1-6 of docs/reliability.md). Default: all.
    #[arg(long, value_delimiter = ',', value_name = "N")]
    abuse_scenarios: Vec<u8>,

    /// The original OCaml switch's build, for the `original-pairs` cell: a directory with a
    /// `BUILT` file of `name=path` lines (or the executables themselves). Default: the
    /// `MESSAGE_SWITCH_ORIGINAL_DIR` environment variable; without either the cell is
    /// skipped.
    #[arg(long, value_name = "DIR")]
    original_dir: Option<PathBuf>,

    /// Seconds each run of the original's client lasts (its `-secs`). Default: 2 windows.
    #[arg(long, value_name = "SECONDS")]
    original_secs: Option<f64>,

    /// Extra side-by-side pairs of the floor and RPC cells at 16 callers (Unix, in memory)
    /// behind issue 20's busy target, judged on the median of all pairs' ratios. Default: 20
    /// (quick: 1); 0 judges the main cells alone.
    #[arg(long, value_name = "N")]
    exchange_repeats: Option<usize>,

    /// Rounds of the `original-pairs` cell (each runs every pair against both switches).
    #[arg(long, value_name = "N", default_value_t = 2)]
    original_rounds: usize,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// The floor's echo server (started by the bench itself).
    #[command(hide = true)]
    EchoServer {
        /// The Unix socket to listen on (TCP is 127.0.0.1, port 0).
        #[arg(long)]
        unix: PathBuf,
        /// Runtime threads, as the switch's `--threads`.
        #[arg(long, default_value_t = 1)]
        threads: u16,
    },
}

/// A part of the run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Section {
    /// Echo round trips (needed for every ratio).
    Floor,
    /// RPC through the switch with the client pair.
    Rpc,
    /// RPC as the OCaml clients make it (7 exchanges), Unix socket.
    Real,
    /// One message to each of many queues, each with a listener.
    Fanout,
    /// A Send with and without many idle Transfers.
    Idle,
    /// RSS with many stored messages.
    Memory,
    /// Hostile and overloaded clients (not run by default: `--only abuse`).
    Abuse,
    /// The original's own RPC pairs against our switch and the OCaml switch (skipped when
    /// the original is not built: `--original-dir`).
    OriginalPairs,
}

/// How the load generator reaches a server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Transport {
    /// The Unix socket (the original switch's only transport).
    Unix,
    /// Loopback TCP.
    Tcp,
}

/// Whether the switch persists.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Storage {
    /// No `--statedir`.
    Memory,
    /// `--statedir`: every mutation of a persistent queue is fsynced (group commit) before
    /// its reply.
    Statedir,
    /// `--statedir --ack-sync lazy`: the same, except that Acks are answered before their
    /// sync.
    StatedirLazy,
}

impl Storage {
    /// Whether the switch journals (a state directory).
    pub fn is_durable(self) -> bool {
        self != Storage::Memory
    }

    /// The switch's flags for this mode, besides `--statedir`.
    fn durable_flags(self) -> &'static [&'static str] {
        match self {
            Storage::StatedirLazy => &["--ack-sync", "lazy"],
            Storage::Memory | Storage::Statedir => &[],
        }
    }
}

/// Everything a run does, resolved from the arguments.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Warm-up and window of every cell.
    pub timing: Timing,
    /// Whether `--quick` was given.
    pub quick: bool,
    /// Sections to run.
    pub sections: Vec<Section>,
    /// Concurrency levels of the round-trip cells.
    pub concurrency: Vec<usize>,
    /// Transports of the round-trip cells.
    pub transports: Vec<Transport>,
    /// Storage modes of the RPC cells.
    pub storages: Vec<Storage>,
    /// Messages for the memory figure.
    pub messages: u64,
    /// Idle Transfers for the send-cost figure.
    pub idle: usize,
    /// Queues of the fan-out figure.
    pub fanout_queues: usize,
    /// Runtime threads of the servers, one set of round-trip cells per value; the first is
    /// used by the other sections.
    pub server_threads: Vec<u16>,
    /// Concurrency levels of the real-pattern cells.
    pub real_concurrency: Vec<usize>,
    /// `--compaction-bytes-min` of the durable switches.
    pub compaction_bytes_min: u64,
    /// Scale of the abuse scenarios.
    pub abuse_scale: f64,
    /// Abuse scenarios to run (all if empty).
    pub abuse_scenarios: Vec<u8>,
    /// Extra pairs of the busy exchange target's cells (`repeats`).
    pub exchange_repeats: usize,
    /// Where the original's build is, if given.
    pub original_dir: Option<PathBuf>,
    /// Seconds of each run of the original's client.
    pub original_seconds: f64,
    /// Rounds of the original-pairs cell.
    pub original_rounds: usize,
}

impl Plan {
    pub fn has(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }

    /// The runtime threads of the sections that run once.
    pub fn threads(&self) -> u16 {
        self.server_threads.first().copied().unwrap_or(1)
    }
}

/// Sender connections of the fan-out rounds and of the memory fill.
const FANOUT_SENDERS: usize = 16;
const MEMORY_SENDERS: usize = 32;

/// File descriptors the bench needs beyond the idle waiters' connections.
const SPARE_FILES: u64 = 1_200;

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(Internal::EchoServer { unix, threads }) = &args.command {
        return echo::run_server(unix, *threads);
    }
    let plan = plan(&args);
    let switch = match &args.switch {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("message-switch"),
    };
    if !switch.is_file() {
        bail!(
            "no switch binary at {} (build it first: cargo build --release --bins)",
            switch.display()
        );
    }
    let started = Instant::now();
    let report = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(plan, &switch))?;
    print!("{}", report.render());
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn plan(args: &Args) -> Plan {
    let (warmup, window, messages) = if args.quick {
        (0.15, 0.5, 100_000)
    } else {
        (0.5, 2.0, 1_000_000)
    };
    let window = args.window.unwrap_or(window);
    let sections = if args.only.is_empty() {
        vec![
            Section::Floor,
            Section::Rpc,
            Section::Real,
            Section::Fanout,
            Section::Idle,
            Section::Memory,
            Section::OriginalPairs,
        ]
    } else {
        args.only.clone()
    };
    Plan {
        timing: Timing {
            warmup: Duration::from_secs_f64(args.warmup.unwrap_or(warmup)),
            window: Duration::from_secs_f64(window),
        },
        quick: args.quick,
        sections,
        concurrency: args.concurrency.clone(),
        transports: args.transport.clone(),
        storages: args.storage.clone(),
        messages: args.messages.unwrap_or(messages),
        idle: args.idle,
        fanout_queues: args.fanout_queues,
        server_threads: first_of_each(&args.server_threads),
        real_concurrency: args.real_concurrency.clone(),
        compaction_bytes_min: args.compaction_bytes_min,
        abuse_scale: args.abuse_scale,
        abuse_scenarios: args.abuse_scenarios.clone(),
        exchange_repeats: args.exchange_repeats.unwrap_or(if args.quick {
            1
        } else {
            repeats::DEFAULT_REPEATS
        }),
        original_dir: args.original_dir.clone(),
        original_seconds: args.original_secs.unwrap_or(window * 2.0).max(0.5),
        original_rounds: args.original_rounds.max(1),
    }
}

async fn run(plan: Plan, switch_binary: &Path) -> Result<Report> {
    let scratch = ScratchDir::new()?;
    let mut report = Report::new(plan.clone());
    if plan.has(Section::Floor) || plan.has(Section::Rpc) || plan.has(Section::Real) {
        round_trips(&plan, switch_binary, &scratch, &mut report).await?;
    }
    if plan.has(Section::Fanout) {
        let switch = start_switch(
            switch_binary,
            &scratch,
            "fanout",
            Storage::Memory,
            plan.threads(),
            &plan,
        )?;
        progress(&format!("fan-out: {} queues", plan.fanout_queues));
        let connector = UnixConnector::new(&switch.unix);
        report.fanout = Some(
            scale::fanout(
                connector,
                switch.pid(),
                plan.fanout_queues,
                FANOUT_SENDERS,
                plan.timing,
            )
            .await?,
        );
        stop_switch(switch).await?;
    }
    if plan.has(Section::Idle) {
        let idle = idle_waiters_allowed(plan.idle);
        let quiet = start_switch(
            switch_binary,
            &scratch,
            "idle-none",
            Storage::Memory,
            plan.threads(),
            &plan,
        )?;
        let busy = start_switch(
            switch_binary,
            &scratch,
            "idle-busy",
            Storage::Memory,
            plan.threads(),
            &plan,
        )?;
        progress(&format!("send cost with 0 and {idle} idle transfers"));
        let target = |switch: &ChildProcess| scale::Target {
            connector: UnixConnector::new(&switch.unix),
            pid: switch.pid(),
        };
        // A ratio near 1 is the target, so this figure gets twice the usual window.
        let timing = Timing {
            window: plan.timing.window * 2,
            ..plan.timing
        };
        report.idle = Some(scale::idle_waiters(target(&quiet), target(&busy), idle, timing).await?);
        stop_switch(quiet).await?;
        stop_switch(busy).await?;
    }
    if plan.has(Section::Memory) {
        let switch = start_switch(
            switch_binary,
            &scratch,
            "memory",
            Storage::Memory,
            plan.threads(),
            &plan,
        )?;
        progress(&format!("memory: {} stored messages", plan.messages));
        let connector = UnixConnector::new(&switch.unix);
        report.memory =
            Some(scale::memory(connector, &switch, plan.messages, MEMORY_SENDERS).await?);
        stop_switch(switch).await?;
    }
    if plan.has(Section::OriginalPairs) {
        report.original = Some(match original::locate(plan.original_dir.as_deref()) {
            Ok(found) => original::Outcome::Runs(
                original::run(&found, switch_binary, &plan, &scratch).await?,
            ),
            Err(reason) => {
                progress(&format!("original pairs: skipped: {reason}"));
                original::Outcome::Skipped(reason)
            }
        });
    }
    if plan.has(Section::Abuse) {
        let abuse = abuse::run(
            switch_binary,
            &scratch,
            abuse::Scale(plan.abuse_scale),
            &plan.abuse_scenarios,
        )
        .await?;
        print!("{abuse}");
    }
    report.finish();
    Ok(report)
}

/// The floor, RPC and real-pattern cells, interleaved: for each transport and concurrency,
/// and for each runtime thread count, the floor cell and then the RPC and real-pattern cells
/// of each storage mode, so that each is compared with a floor measured moments before and
/// the thread counts see the same background load. An `fdatasync` probe runs before each
/// durable switch's cells.
async fn round_trips(
    plan: &Plan,
    switch_binary: &Path,
    scratch: &ScratchDir,
    report: &mut Report,
) -> Result<()> {
    let mut echoes = Vec::new();
    let mut switches = Vec::new();
    for &threads in &plan.server_threads {
        if plan.has(Section::Floor) {
            echoes.push((threads, start_echo(scratch, threads)?));
        }
        if plan.has(Section::Rpc) || plan.has(Section::Real) {
            for &storage in &plan.storages {
                let name = format!("rt-{storage:?}-{threads}").to_lowercase();
                let switch = start_switch(switch_binary, scratch, &name, storage, threads, plan)?;
                switches.push((storage, threads, switch));
            }
        }
    }
    let mut cell = 0;
    for &transport in &plan.transports {
        for concurrency in concurrency_levels(plan, transport) {
            let rpc_here = plan.has(Section::Rpc) && plan.concurrency.contains(&concurrency);
            let real_here = plan.has(Section::Real)
                && transport == Transport::Unix
                && plan.real_concurrency.contains(&concurrency);
            for &threads in &plan.server_threads {
                let key = |storage| Key {
                    transport,
                    storage,
                    concurrency,
                    threads,
                };
                if let Some((_, echo)) = echoes.iter().find(|(t, _)| *t == threads) {
                    progress(&format!(
                        "floor {transport:?} c={concurrency} threads={threads}"
                    ));
                    let measured = floor_cell(echo, transport, concurrency, plan.timing).await?;
                    report.floor.push((key(Storage::Memory), measured));
                }
                for (storage, _, switch) in switches.iter().filter(|(_, t, _)| *t == threads) {
                    let key = key(*storage);
                    if storage.is_durable() && (rpc_here || real_here) {
                        report
                            .fsync
                            .push(fsync_probe(scratch, plan.timing, false).await?);
                        report
                            .fsync_busy
                            .push(fsync_probe(scratch, plan.timing, true).await?);
                    }
                    if rpc_here {
                        cell += 1;
                        progress(&format!("rpc {key}"));
                        let tag = cell.to_string();
                        let measured =
                            rpc_cell(switch, transport, concurrency, plan.timing, &tag).await?;
                        report.rpc.push((key, measured));
                    }
                    if real_here {
                        cell += 1;
                        progress(&format!("real pattern {key}"));
                        let connector = UnixConnector::new(&switch.unix);
                        let tag = cell.to_string();
                        let measured =
                            pattern::real(connector, switch.pid(), concurrency, plan.timing, &tag)
                                .await?;
                        report.real.push((key, measured));
                    }
                }
            }
        }
    }
    let threads = plan.threads();
    let repeat_here = plan.exchange_repeats > 0
        && plan.has(Section::Floor)
        && plan.has(Section::Rpc)
        && plan.transports.contains(&Transport::Unix)
        && plan.concurrency.contains(&repeats::CONCURRENCY);
    let echo = echoes.iter().find(|(t, _)| *t == threads);
    let memory_switch = switches
        .iter()
        .find(|(storage, t, _)| *storage == Storage::Memory && *t == threads);
    if let (true, Some((_, echo)), Some((_, _, switch))) = (repeat_here, echo, memory_switch) {
        report.exchange_repeats =
            repeats::measure(echo, switch, plan.exchange_repeats, plan.timing, progress).await?;
    }
    for (_, _, switch) in switches {
        stop_switch(switch).await?;
    }
    Ok(())
}

/// `values` without repeats, in their first order (a repeated thread count would start two
/// servers on the same socket).
fn first_of_each(values: &[u16]) -> Vec<u16> {
    let mut unique = Vec::with_capacity(values.len());
    for value in values {
        if !unique.contains(value) {
            unique.push(*value);
        }
    }
    unique
}

/// Probes `fdatasync` in the scratch directory (where the state directories are) for an
/// eighth of a window, alone or beside a spinning thread (`busy`).
async fn fsync_probe(scratch: &ScratchDir, timing: Timing, busy: bool) -> Result<fsync::Syncs> {
    progress(&format!("fdatasync probe (busy: {busy})"));
    let dir = scratch.path().to_owned();
    let window = timing.window / 8;
    tokio::task::spawn_blocking(move || fsync::probe_with(&dir, "fsync-probe", window, busy))
        .await?
}

/// The concurrency levels of a transport's round-trip cells: the RPC levels, and on Unix the
/// real pattern's too, in ascending order.
fn concurrency_levels(plan: &Plan, transport: Transport) -> Vec<usize> {
    let mut levels = plan.concurrency.clone();
    if plan.has(Section::Real) && transport == Transport::Unix {
        levels.extend(&plan.real_concurrency);
    }
    levels.sort_unstable();
    levels.dedup();
    levels
}

/// What a round-trip cell measured: transport, storage mode (always memory for the floor),
/// callers, and the server's runtime threads.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Key {
    /// How the load generator reaches the server.
    pub transport: Transport,
    /// Whether the switch persists.
    pub storage: Storage,
    /// Concurrent callers.
    pub concurrency: usize,
    /// The server's runtime threads.
    pub threads: u16,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} {:?} c={} threads={}",
            self.transport, self.storage, self.concurrency, self.threads
        )
    }
}

async fn floor_cell(
    echo: &ChildProcess,
    transport: Transport,
    concurrency: usize,
    timing: Timing,
) -> Result<Throughput> {
    match transport {
        Transport::Unix => {
            rpc::floor(
                UnixConnector::new(&echo.unix),
                echo.pid(),
                concurrency,
                timing,
            )
            .await
        }
        Transport::Tcp => {
            rpc::floor(
                TcpConnector::new(echo.tcp.to_string()),
                echo.pid(),
                concurrency,
                timing,
            )
            .await
        }
    }
}

async fn rpc_cell(
    switch: &ChildProcess,
    transport: Transport,
    concurrency: usize,
    timing: Timing,
    tag: &str,
) -> Result<Throughput> {
    match transport {
        Transport::Unix => {
            let connector = UnixConnector::new(&switch.unix);
            rpc::rpc(connector, switch.pid(), concurrency, timing, tag).await
        }
        Transport::Tcp => {
            let connector = TcpConnector::new(switch.tcp.to_string());
            rpc::rpc(connector, switch.pid(), concurrency, timing, tag).await
        }
    }
}

/// Starts a switch listening on loopback TCP port 0 and `NAME.sock` in the scratch
/// directory, with `--threads THREADS`, and with `--statedir NAME.state` for
/// [`Storage::Statedir`] (compacting at the plan's journal size). Logging is kept to
/// warnings so that it costs nothing per request. The per-client connection limits are off
/// (where the binary has them): every connection of a cell comes from this one process, one
/// client to the switch, and 256 callers open theirs faster than the default rate allows.
fn start_switch(
    binary: &Path,
    scratch: &ScratchDir,
    name: &str,
    storage: Storage,
    threads: u16,
    plan: &Plan,
) -> Result<ChildProcess> {
    let mut command = Command::new(binary);
    command.args(client_limits_off(binary));
    command
        .env("RUST_LOG", "warn")
        .env_remove("TOKIO_WORKER_THREADS")
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--path")
        .arg(scratch.path().join(format!("{name}.sock")))
        // Above the idle waiters' connections (the default limit is 10,000).
        .arg("--connections-max")
        .arg("50000");
    if storage.is_durable() {
        command
            .arg("--statedir")
            .arg(scratch.path().join(format!("{name}.state")))
            .arg("--compaction-bytes-min")
            .arg(plan.compaction_bytes_min.to_string())
            .args(storage.durable_flags());
    }
    let switch = ChildProcess::spawn(&format!("switch {name}"), command)?;
    progress(&format!("switch {name} started, pid {}", switch.pid()));
    Ok(switch)
}

/// Asks the switch to shut down (`POST /shutdown`), as an operator would, and waits for it
/// to exit (killing it if it does not).
async fn stop_switch(switch: ChildProcess) -> Result<()> {
    let connector = UnixConnector::new(&switch.unix);
    if let Ok(mut connection) = Connection::open(&connector, &ConnectionConfig::default()).await {
        // Shutdown, like every request but Login, Diagnostics and Trace, needs a session.
        if connection.login(&"bench-shutdown".into()).await.is_ok() {
            let _ = connection.shutdown().await;
        }
    }
    tokio::task::spawn_blocking(move || switch.wait_or_kill()).await??;
    Ok(())
}

/// The arguments that turn the per-client connection limits off, if `binary` has them (an
/// older switch given to `--switch` may not): for the sections whose many connections all
/// come from this one process.
fn client_limits_off(binary: &Path) -> Vec<String> {
    let help = Command::new(binary)
        .arg("--help")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    if !help.contains("--client-connections-max") {
        return Vec::new();
    }
    [
        "--client-connections-max",
        "50000",
        "--client-connects-per-second",
        "0",
    ]
    .map(String::from)
    .to_vec()
}

fn start_echo(scratch: &ScratchDir, threads: u16) -> Result<ChildProcess> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("echo-server")
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--unix")
        .arg(scratch.path().join(format!("echo-{threads}.sock")));
    let echo = ChildProcess::spawn(&format!("echo {threads}"), command)?;
    progress(&format!(
        "echo server ({threads} threads) started, pid {}",
        echo.pid()
    ));
    Ok(echo)
}

/// How many idle waiters the open-files limit allows (each needs a socket here and one in
/// the switch, which inherits the limit).
fn idle_waiters_allowed(wanted: usize) -> usize {
    let Some(limit) = child::open_files_limit() else {
        return wanted;
    };
    let allowed = usize::try_from(limit.saturating_sub(SPARE_FILES)).unwrap_or(usize::MAX);
    if allowed < wanted {
        eprintln!(
            "warning: the open-files limit ({limit}) allows only {allowed} idle waiters \
             (raise it with `ulimit -n {}`)",
            wanted as u64 + SPARE_FILES
        );
    }
    wanted.min(allowed)
}

fn progress(text: &str) {
    eprintln!("[bench] {text}");
}
