//! Helpers shared by the client and CLI tests: switches to talk to (a real `message-switch`
//! process, or one running in the test's runtime), a connector whose connections the test
//! can cut, and polling with a deadline.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod container;
pub mod process;
pub mod raw;

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use message_switch::client::{ClientConfig, Connection, ConnectionConfig, Connector};
use message_switch::protocol::{Diagnostics, QueueName};
use message_switch::server::{Config, Switch};

/// How long any polled condition may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` every 20 ms until it returns `Some`, failing the test after [`DEADLINE`].
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `message-switch` process listening on a TCP port chosen by the OS and on a Unix socket
/// in a temporary directory. Killed when dropped.
pub struct SwitchProcess {
    child: Child,
    /// The Unix socket.
    pub socket: PathBuf,
    /// The TCP address.
    pub tcp: SocketAddr,
    /// Lines the switch wrote to stderr after start-up.
    pub stderr: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl SwitchProcess {
    /// Starts the switch and waits until it reports both listeners.
    pub fn start() -> SwitchProcess {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_message-switch"))
            .args(["--listen", "127.0.0.1:0", "--path"])
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env("RUST_LOG", "warn")
            .spawn()
            .expect("message-switch starts");
        let receiver = process::stderr_lines(&mut child);
        let mut tcp = None;
        let mut unix = false;
        let deadline = Instant::now() + DEADLINE;
        while tcp.is_none() || !unix {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = receiver
                .recv_timeout(left)
                .expect("message-switch reports its listeners");
            if let Some(address) = line.strip_prefix("listening on tcp ") {
                tcp = Some(address.trim().parse().expect("a socket address"));
            } else if line.starts_with("listening on unix ") {
                unix = true;
            }
        }
        SwitchProcess {
            child,
            socket,
            tcp: tcp.expect("checked above"),
            stderr: receiver,
            _dir: dir,
        }
    }

    /// `message-cli --path SOCK` with these arguments, ready to run.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_message-cli"));
        command.arg("--path").arg(&self.socket).args(args);
        command.env("RUST_LOG", "warn");
        command
    }

    /// Waits (with the deadline) for the process to exit and returns whether it succeeded.
    pub fn wait_for_exit(&mut self) -> bool {
        wait_until("message-switch exits", || {
            self.child
                .try_wait()
                .expect("try_wait")
                .map(|s| s.success())
        })
    }

    /// A logged-in library connection to this switch, for setting up and checking state.
    pub async fn connection(&self) -> Connection {
        connect(&self.socket).await
    }
}

impl Drop for SwitchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A logged-in connection to the switch at `socket`.
pub async fn connect(socket: &Path) -> Connection {
    let connector = message_switch::client::UnixConnector::new(socket);
    let mut connection = Connection::open(&connector, &ConnectionConfig::default())
        .await
        .expect("connect to the switch");
    connection
        .login(&"test-harness".into())
        .await
        .expect("login");
    connection
}

/// A switch running in this test's runtime, on a Unix socket in a temporary directory, that
/// can be stopped and started again on the same path.
pub struct InProcessSwitch {
    switch: Option<Switch>,
    /// The socket path.
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl InProcessSwitch {
    /// Starts a switch.
    pub async fn start() -> InProcessSwitch {
        let dir = tempfile::tempdir().expect("temporary directory");
        let socket = dir.path().join("sock");
        let mut switch = InProcessSwitch {
            switch: None,
            socket,
            _dir: dir,
        };
        switch.restart().await;
        switch
    }

    /// Stops the switch (if running): every connection is closed and its state is lost.
    pub async fn stop(&mut self) {
        if let Some(switch) = self.switch.take() {
            switch.shutdown();
            switch.stopped().await;
        }
    }

    /// Starts a fresh switch (empty state) on the same socket path.
    pub async fn restart(&mut self) {
        self.stop().await;
        let switch = Switch::start(Config::default());
        // The old switch's accept loop may still hold its listener for a moment after
        // `stopped()`, which `bind_unix` would take for a live switch: replace the file.
        let _ = std::fs::remove_file(&self.socket);
        let listener = tokio::net::UnixListener::bind(&self.socket).expect("bind the socket");
        switch.serve(listener);
        self.switch = Some(switch);
    }

    /// The switch's diagnostics, over a new connection.
    pub async fn diagnostics(&self) -> Diagnostics {
        connect(&self.socket)
            .await
            .diagnostics()
            .await
            .expect("diagnostics")
    }

    /// A plain connector to this switch.
    pub fn connector(&self) -> message_switch::client::UnixConnector {
        message_switch::client::UnixConnector::new(&self.socket)
    }
}

/// Client settings for tests: quick reconnects and short long polls, so failures are noticed
/// fast.
pub fn quick_config() -> ClientConfig {
    ClientConfig {
        transfer_timeout: Duration::from_secs(5),
        reconnect_delay_min: Duration::from_millis(20),
        reconnect_delay_max: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

/// Polls `check` every 20 ms of tokio time until it returns `Some`, failing after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The queue `name` in `diagnostics`, permanent or transient.
pub fn find_queue<'a>(
    diagnostics: &'a Diagnostics,
    name: &QueueName,
) -> Option<&'a message_switch::protocol::QueueDiagnostics> {
    diagnostics
        .permanent_queues
        .iter()
        .chain(&diagnostics.transient_queues)
        .find(|(queue, _)| queue == name)
        .map(|(_, queue)| queue)
}

/// A Unix-socket connector whose connections the test controls: while the gate is closed new
/// connections are refused, and [`Gate::cut`] breaks every connection opened so far (both
/// ends see it, as if the network failed).
#[derive(Clone)]
pub struct GatedConnector {
    socket: PathBuf,
    gate: Arc<Gate>,
}

/// The controls of a [`GatedConnector`].
#[derive(Default)]
pub struct Gate {
    closed: AtomicBool,
    open_streams: Mutex<Vec<StdUnixStream>>,
}

impl Gate {
    /// Refuse new connections.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Accept new connections again.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }

    /// Breaks every connection opened so far.
    pub fn cut(&self) {
        let streams = std::mem::take(&mut *self.open_streams.lock().expect("gate lock"));
        for stream in streams {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl GatedConnector {
    /// A connector to `socket`, with its gate open.
    pub fn new(socket: &Path) -> (GatedConnector, Arc<Gate>) {
        let gate = Arc::new(Gate::default());
        let connector = GatedConnector {
            socket: socket.to_owned(),
            gate: Arc::clone(&gate),
        };
        (connector, gate)
    }
}

impl Connector for GatedConnector {
    type Stream = tokio::net::UnixStream;

    async fn connect(&self) -> io::Result<tokio::net::UnixStream> {
        if self.gate.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the test's gate is closed",
            ));
        }
        // A local Unix-socket connect completes (or fails) at once, so the blocking call is
        // harmless here; it lets the test keep a clone of the socket to shut it down.
        let stream = StdUnixStream::connect(&self.socket)?;
        let control = stream.try_clone()?;
        stream.set_nonblocking(true)?;
        self.gate
            .open_streams
            .lock()
            .expect("gate lock")
            .push(control);
        tokio::net::UnixStream::from_std(stream)
    }
}

/// proptest's configuration with `cases` cases per test, keeping the failing inputs it finds
/// beside the test's source file (`tests/NAME.proptest-regressions`) instead of in a directory
/// of their own at the top of the repository.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    }
}
