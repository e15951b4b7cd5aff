//! `message-switch`: the broker. With no flags it serves HTTP/1.1 on TCP 127.0.0.1:8080;
//! `--path` adds (or, alone, replaces it with) a Unix socket, as the original does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use message_switch::engine;
use message_switch::server::{bind_unix, Config, Switch};
use message_switch::store;

/// The message switch: a store-and-forward broker for RPC between toolstack services.
#[derive(Parser, Debug)]
#[command(name = "message-switch", version, about, long_about = None)]
struct Args {
    /// TCP address to listen on (repeatable). Default: 127.0.0.1:8080, unless only --path
    /// is given.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Vec<SocketAddr>,

    /// Unix socket to listen on. A stale socket file is replaced.
    #[arg(long, value_name = "SOCK")]
    path: Option<PathBuf>,

    /// Permissions of the Unix socket file, in octal.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_octal_mode)]
    socket_mode: u32,

    /// Write the process id to this file (truncated first) and remove it on exit.
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,

    /// Most events the trace keeps.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().trace_entries_max)]
    trace_entries: usize,

    /// Most bytes the trace keeps.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().trace_bytes_max)]
    trace_bytes_max: usize,

    /// Strings in traced payloads of at least this many bytes are cut.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().trace_truncate_bytes)]
    trace_truncate: usize,

    /// Largest request body accepted.
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().body_bytes_max)]
    body_bytes_max: usize,

    /// Longest queue name or session token.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().name_bytes_max)]
    name_bytes_max: usize,

    /// Most payload bytes in one Transfer reply (it always holds at least one message; the
    /// client continues from `next`).
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().transfer_reply_bytes_max)]
    transfer_reply_bytes_max: usize,

    /// Most distinct session tokens one connection may log in with.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().logins_per_connection_max)]
    logins_per_connection_max: usize,

    /// Most queues at once.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().queues_max)]
    queues_max: usize,

    /// Most messages in one queue.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().queue_messages_max)]
    queue_messages_max: usize,

    /// Most payload bytes stored in all queues together.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().stored_bytes_max)]
    stored_bytes_max: usize,

    /// Longest Transfer or Trace wait a client may ask for, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = engine::Config::default().wait_timeout_max.as_secs_f64())]
    wait_timeout_max: f64,

    /// Most connections open at once.
    #[arg(long, value_name = "N", default_value_t = Config::default().connections_max)]
    connections_max: usize,

    /// Seconds a connection may take to send a request head once it has started one (and
    /// then its body); slower ones are closed. Idle connections are never timed out. 0: no
    /// limit.
    #[arg(long, value_name = "SECONDS",
          default_value_t = Config::default().request_head_timeout.map_or(0.0, |t| t.as_secs_f64()))]
    request_head_timeout: f64,

    /// Most queues given their own series in /metrics (the deepest ones).
    #[arg(long, value_name = "N", default_value_t = Config::default().metrics_queues_max)]
    metrics_queues_max: usize,

    /// Threads that run connections and the engine: 1 is a single-threaded runtime (the
    /// original is single-threaded too, and the switch is mostly idle between requests).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,

    /// Keep queues and messages in this directory (created if missing), so that they survive
    /// restarts and crashes: a 200 reply to a change then means it is on disk.
    #[arg(long, value_name = "DIR")]
    statedir: Option<PathBuf>,

    /// With --statedir: if the journal or snapshot is corrupt, keep every intact record
    /// instead of refusing to start (damaged files are kept with a .salvaged suffix).
    #[arg(long, requires = "statedir")]
    salvage: bool,

    /// With --statedir: compact (replace the journal by a snapshot) once the journal holds at
    /// least this many bytes…
    #[arg(long, value_name = "BYTES", default_value_t = store::Options::default().compaction_bytes_min)]
    compaction_bytes_min: u64,

    /// …and at least this many times the size of the last snapshot.
    #[arg(long, value_name = "RATIO", default_value_t = store::Options::default().compaction_ratio)]
    compaction_ratio: f64,
}

fn parse_octal_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("not an octal file mode: {text}"))
}

impl Args {
    fn config(&self) -> Result<Config> {
        if !(self.wait_timeout_max.is_finite() && self.wait_timeout_max >= 0.0) {
            bail!("--wait-timeout-max must be a non-negative number of seconds");
        }
        if !(self.request_head_timeout.is_finite() && self.request_head_timeout >= 0.0) {
            bail!("--request-head-timeout must be a non-negative number of seconds");
        }
        if !(self.compaction_ratio.is_finite() && self.compaction_ratio >= 0.0) {
            bail!("--compaction-ratio must be a non-negative number");
        }
        // The journal stores lengths in 32 bits.
        if self.statedir.is_some() && self.body_bytes_max >= u32::MAX as usize {
            bail!("--body-bytes-max must be below 4 GiB with --statedir");
        }
        Ok(Config {
            engine: engine::Config {
                name_bytes_max: self.name_bytes_max,
                queues_max: self.queues_max,
                queue_messages_max: self.queue_messages_max,
                stored_bytes_max: self.stored_bytes_max,
                wait_timeout_max: Duration::from_secs_f64(self.wait_timeout_max),
                trace_entries_max: self.trace_entries,
                trace_bytes_max: self.trace_bytes_max,
                trace_truncate_bytes: self.trace_truncate,
                transfer_reply_bytes_max: self.transfer_reply_bytes_max,
                logins_per_connection_max: self.logins_per_connection_max,
            },
            body_bytes_max: self.body_bytes_max,
            connections_max: self.connections_max,
            request_head_timeout: (self.request_head_timeout > 0.0)
                .then(|| Duration::from_secs_f64(self.request_head_timeout)),
            metrics_queues_max: self.metrics_queues_max,
            journal: store::Options {
                compaction_bytes_min: self.compaction_bytes_min,
                compaction_ratio: self.compaction_ratio,
                salvage: self.salvage,
                ..store::Options::default()
            },
            ..Config::default()
        })
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = args.config()?;
    runtime(args.threads)?.block_on(run(args, config))
}

/// A current-thread runtime for one thread (no wake-ups cross threads), else a
/// multi-threaded one with `threads` workers.
fn runtime(threads: u16) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(threads));
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn run(args: Args, config: Config) -> Result<()> {
    let switch = match &args.statedir {
        Some(dir) => {
            let (switch, report) = Switch::open_dir(config, dir)
                .await
                .with_context(|| format!("cannot open the state directory {}", dir.display()))?;
            eprintln!(
                "recovered {} queues and {} messages from {}",
                report.queues,
                report.messages,
                dir.display()
            );
            switch
        }
        None => Switch::start(config),
    };
    let mut tcp = args.listen.clone();
    if tcp.is_empty() && args.path.is_none() {
        tcp.push(SocketAddr::from(([127, 0, 0, 1], 8080)));
    }
    for address in tcp {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        eprintln!("listening on tcp {}", listener.local_addr()?);
        switch.serve(listener);
    }
    if let Some(path) = &args.path {
        let listener = bind_unix(path, args.socket_mode)
            .await
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        eprintln!("listening on unix {}", path.display());
        switch.serve(listener);
    }
    if let Some(pidfile) = &args.pidfile {
        std::fs::write(pidfile, std::process::id().to_string())
            .with_context(|| format!("cannot write the pid file {}", pidfile.display()))?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = switch.stopped() => {}
        _ = terminate.recv() => switch.shutdown(),
        _ = tokio::signal::ctrl_c() => switch.shutdown(),
    }
    switch.stopped().await;
    let journal = switch.close_journal().await;
    if let Some(path) = &args.path {
        let _ = std::fs::remove_file(path);
    }
    if let Some(pidfile) = &args.pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    if let Err(error) = journal {
        bail!("stopped, but the journal is not fully durable: {error}");
    }
    tracing::info!("stopped");
    Ok(())
}
