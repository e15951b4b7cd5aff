//! The thin hyper shell around the engine.
//!
//! [`Switch::start`] spawns the driver task, the one owner of the [`Engine`]. Each
//! [`Switch::serve`] spawns an accept loop for one listener (TCP, Unix socket, or turmoil's
//! simulated TCP: anything implementing [`Listener`]); each accepted connection is served by
//! hyper's HTTP/1.1 server, whose handler routes the request and sends it to the driver over
//! a bounded channel, then encodes the reply it gets back.
//!
//! Only `tokio::time` is used for time, so the same code runs in virtual time under turmoil
//! and in paused-clock tests; a wall-clock reading is taken once at start-up unless the
//! configuration supplies the start time.

mod accept;
mod admission;
mod client;
mod client_view;
mod driver;
mod durable;
mod exchange;
mod fairness;
mod head_timeout;
mod held_stores;
mod http;
mod id_hash;
mod in_place;
mod inspection;
mod metrics;
mod refusal_backoff;
mod runtime;
mod sampler;
mod shutdown_signal;
mod transfer_body;
mod web;

pub use admission::ClientLimits;
pub use client::ClientId;
pub use metrics::Histogram;
pub use runtime::runtime;
pub use sampler::SamplerConfig;

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use crate::engine::{self, Engine, EngineStats, Timestamp};
use crate::store::{self, JournalStats, Opened, StatsHandle, StoreError};
use driver::{Clock, Command, Driver, DriverShared};
use durable::Durability;

/// Server configuration: the engine's limits plus the shell's own.
#[derive(Clone, Debug)]
pub struct Config {
    /// The engine's limits.
    pub engine: engine::Config,
    /// Largest request body accepted; larger ones get 413.
    pub body_bytes_max: usize,
    /// Most connections open at once; further ones get 429 and are closed.
    pub connections_max: usize,
    /// The limits on each client's connections (how many open, how fast new ones).
    pub client_limits: ClientLimits,
    /// How long a connection may take to send a request head once it has begun one (and then
    /// its body); past it the connection is closed (a body too slow gets 408 first). Idle
    /// connections between requests are never timed out: sessions live on them. `None`: no
    /// limit.
    pub request_head_timeout: Option<Duration>,
    /// The longest a 429 is held back on a connection that keeps being refused
    /// (`refusal_backoff`: after 8 refusals in a row, each next one waits 1 ms, doubling up
    /// to this). Zero: refusals are never held.
    pub refusal_delay_max: Duration,
    /// Requests queued for the engine before handlers wait (back-pressure).
    pub command_queue_len: usize,
    /// How long a shutdown waits for in-flight requests before giving up on them.
    pub drain_timeout: Duration,
    /// Most queues given their own series in `/metrics` (the deepest ones), to bound label
    /// cardinality.
    pub metrics_queues_max: usize,
    /// The switch's start time. `None` reads the wall clock once at start; the simulation
    /// passes a fixed time so that runs are reproducible.
    pub start_time: Option<Timestamp>,
    /// Journal tuning, used by [`Switch::open_dir`] (and by whoever opens a store for
    /// [`Switch::start_durable`]).
    pub journal: store::Options,
    /// The console's sampler (`/admin/api/overview`).
    pub sampler: SamplerConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            engine: engine::Config::default(),
            body_bytes_max: 64 << 20,
            connections_max: 10_000,
            client_limits: ClientLimits::default(),
            // Generous for any real client (a head is a few hundred bytes), short enough that
            // slow-header clients cannot pin connections for long.
            request_head_timeout: Some(Duration::from_secs(120)),
            // Long enough that a flooding connection costs the switch next to nothing (a few
            // requests a second), short enough that a client which retries after a full
            // queue drains barely notices.
            refusal_delay_max: Duration::from_millis(100),
            command_queue_len: 4096,
            drain_timeout: Duration::from_secs(5),
            metrics_queues_max: 100,
            start_time: None,
            journal: store::Options::default(),
            sampler: SamplerConfig::default(),
        }
    }
}

/// A source of connections.
pub trait Listener: Send + 'static {
    /// The connection type.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// The client at the other end of `io`, which the per-client limits and the fair
    /// scheduling count by. By default a listener cannot tell its peers apart.
    fn client(io: &Self::Io) -> ClientId {
        let _ = io;
        ClientId::Unidentified
    }
}

impl Listener for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        let (stream, _) = TcpListener::accept(self).await?;
        // Small request/response exchanges: do not let Nagle delay them.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn client(io: &Self::Io) -> ClientId {
        io.peer_addr()
            .map_or(ClientId::Unidentified, ClientId::of_tcp)
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;

    async fn accept(&mut self) -> io::Result<Self::Io> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }

    fn client(io: &Self::Io) -> ClientId {
        ClientId::of_unix(io)
    }
}

/// A running switch. Cloning gives another handle to the same switch.
#[derive(Clone)]
pub struct Switch {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    config: Config,
    commands: mpsc::Sender<Command>,
    /// The driver's state, for answering requests in place (`in_place`).
    driver: Arc<DriverShared>,
    shutdown: watch::Receiver<bool>,
    next_connection: AtomicU64,
    open_connections: AtomicUsize,
    /// Accept loops still running (each holds its listening socket).
    open_listeners: AtomicUsize,
    /// Notified when the last connection or the last listener closes.
    all_closed: Notify,
    http_metrics: metrics::HttpMetrics,
    /// Each client's open connections, rate bucket and refusal counts.
    admission: Arc<admission::Admission>,
    /// Journal sync latencies, when the switch is durable.
    sync_latency: Option<Arc<Histogram>>,
    /// The journal's counters, when the switch is durable.
    journal_stats: Option<StatsHandle>,
    /// What the console's sampler has gathered.
    samples: sampler::Samples,
}

impl Switch {
    /// Starts the engine's driver on the current tokio runtime. The switch serves nothing
    /// until [`Switch::serve`] is given a listener.
    /// Nothing is persisted: every reply is released as soon as the engine makes it.
    pub fn start(config: Config) -> Switch {
        let start_time = config.start_time.unwrap_or_else(wall_clock_now);
        let engine = Engine::new(config.engine.clone(), start_time).without_journal();
        Self::launch(config, start_time, engine, None)
    }

    /// Starts a durable switch over a recovered store (from [`store::open_dir`],
    /// [`store::open_threaded`] or, in the simulation, [`store::open_on_runtime`]), on the
    /// current tokio runtime.
    ///
    /// A 200 reply to a mutating request (create, destroy, send, ack) then leaves only after
    /// its change is durable; concurrent requests share one sync. Reads never wait for the
    /// disk. If the journal fails, the mutations waiting on it get 507 (disk full) or 503,
    /// new mutations are refused the same way, and the switch accepts them again once the
    /// journal's retries succeed.
    pub fn start_durable(config: Config, opened: Opened) -> Switch {
        let start_time = config.start_time.unwrap_or_else(wall_clock_now);
        let recovered_next_index = opened.store.next_index();
        let engine = Engine::with_store(config.engine.clone(), start_time, opened.store);
        let sync_latency = Arc::new(Histogram::default());
        let stats = opened.journal.stats();
        let durability =
            Durability::new(opened.journal, recovered_next_index, sync_latency.clone());
        Self::launch(
            config,
            start_time,
            engine,
            Some((durability, sync_latency, stats)),
        )
    }

    /// Recovers (creating it if missing) the state directory `dir` with `config.journal`,
    /// off the async threads, then [`Switch::start_durable`]s over it. Returns what recovery
    /// found too.
    pub async fn open_dir(
        config: Config,
        dir: &Path,
    ) -> Result<(Switch, store::RecoveryReport), StoreError> {
        let options = config.journal.clone();
        let dir = dir.to_path_buf();
        let opened = tokio::task::spawn_blocking(move || store::open_dir(&dir, &options))
            .await
            .map_err(|_| StoreError::Closed)??;
        let report = opened.report.clone();
        Ok((Self::start_durable(config, opened), report))
    }

    fn launch(
        config: Config,
        start_time: Timestamp,
        engine: Engine,
        durable: Option<(Durability, Arc<Histogram>, StatsHandle)>,
    ) -> Switch {
        let (commands, receiver) = mpsc::channel(config.command_queue_len.max(1));
        let (shutdown_sender, shutdown) = watch::channel(false);
        let (durability, sync_latency, journal_stats) = match durable {
            Some((durability, latency, stats)) => (Some(durability), Some(latency), Some(stats)),
            None => (None, None, None),
        };
        let admission = admission::Admission::new(config.client_limits);
        let (driver, driver_shared) = Driver::new(
            engine,
            Clock::new(start_time),
            receiver,
            shutdown_sender,
            durability,
            admission.clone(),
        );
        tokio::spawn(driver.run());
        let samples = sampler::spawn(config.sampler.clone(), &commands, shutdown.clone());
        Switch {
            shared: Arc::new(Shared {
                config,
                commands,
                driver: driver_shared,
                shutdown,
                next_connection: AtomicU64::new(0),
                open_connections: AtomicUsize::new(0),
                open_listeners: AtomicUsize::new(0),
                all_closed: Notify::new(),
                http_metrics: metrics::HttpMetrics::default(),
                admission,
                sync_latency,
                journal_stats,
                samples,
            }),
        }
    }

    /// Accepts connections from `listener` until the switch shuts down. Accept errors (such
    /// as running out of file descriptors) pause this loop only, with a pause that doubles
    /// per failure up to a second; they are logged once per interval, and so is the recovery.
    /// Connections already open are served throughout.
    pub fn serve<L: Listener>(&self, mut listener: L) -> JoinHandle<()> {
        let shared = self.shared.clone();
        shared.open_listeners.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            let mut shutdown = shared.shutdown.clone();
            let mut backoff = accept::AcceptBackoff::default();
            let mut accepted_in_a_row = 0;
            loop {
                if accepted_in_a_row == fairness::ACCEPTS_PER_TURN {
                    accepted_in_a_row = 0;
                    tokio::task::yield_now().await;
                }
                tokio::select! {
                    biased;
                    _ = async { shutdown.wait_for(|stopping| *stopping).await.is_ok() } => break,
                    accepted = listener.accept() => match accepted {
                        Ok(io) => {
                            if let Some(failures) = backoff.accepted() {
                                tracing::warn!(failures, "accepting connections again");
                            }
                            accepted_in_a_row += 1;
                            let client = L::client(&io);
                            tokio::spawn(http::serve_connection(shared.clone(), io, client));
                        }
                        Err(error) => {
                            let (pause, log) = backoff.failed(tokio::time::Instant::now());
                            if let accept::FailureLog::Warn { failures } = log {
                                tracing::warn!(
                                    %error,
                                    failures,
                                    "accept failed; retrying with back-off (logged at most every {} s)",
                                    accept::ACCEPT_LOG_INTERVAL.as_secs()
                                );
                            }
                            tokio::time::sleep(pause).await;
                        }
                    },
                }
            }
            // Close the listening socket before `stopped` can resolve, so that whoever waits
            // for it may bind the same address or path again at once.
            drop(listener);
            if shared.open_listeners.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared.all_closed.notify_waiters();
            }
        })
    }

    /// Begins a graceful shutdown, as `POST /shutdown` does: stop accepting, answer parked
    /// requests and what is in flight, close connections.
    pub fn shutdown(&self) {
        let commands = self.shared.commands.clone();
        tokio::spawn(async move {
            let _ = commands.send(Command::Shutdown).await;
        });
    }

    /// Whether a shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Resolves as soon as a shutdown has begun (`POST /shutdown` or [`Switch::shutdown`]),
    /// before connections drain: the moment to tell a service manager that the switch stops.
    pub async fn stopping(&self) {
        let mut shutdown = self.shared.shutdown.clone();
        let _ = shutdown.wait_for(|stopping| *stopping).await.is_ok();
    }

    /// Resolves once a shutdown has begun and every connection has closed, or the drain
    /// timeout has passed since the shutdown began.
    pub async fn stopped(&self) {
        let mut shutdown = self.shared.shutdown.clone();
        let _ = shutdown.wait_for(|stopping| *stopping).await.is_ok();
        let drained = async {
            loop {
                let notified = self.shared.all_closed.notified();
                if self.shared.open_connections.load(Ordering::Acquire) == 0
                    && self.shared.open_listeners.load(Ordering::Acquire) == 0
                {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(self.shared.config.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!("shutdown: gave up waiting for connections to close");
        }
        if let Err(error) = self.close_journal().await {
            tracing::error!(%error, "shutdown: the journal is not fully durable");
        }
    }

    /// Makes every change durable and stops the journal (done by [`Switch::stopped`]; call
    /// it afterwards to learn the outcome, e.g. for the exit status). `Ok` at once without a
    /// journal; idempotent. Changes are refused once the journal is closed.
    pub async fn close_journal(&self) -> Result<(), String> {
        let (sender, receiver) = oneshot::channel();
        if self
            .shared
            .commands
            .send(Command::CloseJournal(sender))
            .await
            .is_err()
        {
            return Err("the switch has stopped".to_owned());
        }
        // A sync can only hang on a hung disk; do not hang the shutdown with it forever.
        let limit = self
            .shared
            .config
            .drain_timeout
            .max(Duration::from_secs(10));
        match tokio::time::timeout(limit, receiver).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the switch has stopped".to_owned()),
            Err(_) => Err(format!(
                "the journal did not finish within {} s",
                limit.as_secs_f64()
            )),
        }
    }

    /// The journal's counters (syncs, compactions and their timings), if the switch is
    /// durable.
    pub fn journal_stats(&self) -> Option<JournalStats> {
        self.shared.journal_stats.as_ref().map(StatsHandle::get)
    }

    /// The engine's bookkeeping counts, or `None` if the driver has stopped.
    pub async fn stats(&self) -> Option<EngineStats> {
        let (sender, receiver) = oneshot::channel();
        self.shared
            .commands
            .send(Command::Stats(sender))
            .await
            .ok()?;
        receiver.await.ok()
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Acquire)
    }
}

/// How many connections a TCP listener lets the kernel hold before they are accepted (the
/// kernel caps it at `net.core.somaxconn`). tokio's `TcpListener::bind` asks for 128: a burst
/// of more connections than that (a host's services starting together, a benchmark's 512)
/// had SYNs dropped and retried a second later, so a call waited about 1 s for its connection.
/// The Unix listener gets the kernel's maximum already.
const TCP_BACKLOG: u32 = 4096;

/// Listens on `address` (with `SO_REUSEADDR`, so a restart does not wait for the old
/// connections' `TIME_WAIT`) with a backlog of [`TCP_BACKLOG`].
pub fn bind_tcp(address: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(TCP_BACKLOG)
}

/// Binds a Unix socket at `path` with permissions `mode`. A stale socket file left by a
/// process that died is replaced; a live one (something accepts connections on it) or a
/// file that is not a socket is an error, so one switch cannot silently steal another's path.
///
/// A missing directory of `path` is created (with its parents, mode 0755), as systemd's
/// `RuntimeDirectory=` did for the original: the packaged unit leaves `/run/message-switch`
/// alone, so that no systemd (219 on a dom0 ignores `RuntimeDirectoryPreserve=`) removes it,
/// and the socket file and state directory in it, when the service stops.
pub async fn bind_unix(path: &Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|error| {
                    io::Error::new(
                        error.kind(),
                        format!("cannot create the directory {}: {error}", parent.display()),
                    )
                })?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if UnixStream::connect(path).await.is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another process is listening on {}", path.display()),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// The wall clock, read once at start-up (outside the simulation).
fn wall_clock_now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_unix_nanos(i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX))
}
