//! The service manager's notification protocol (`sd_notify`): newline-separated
//! `VARIABLE=value` assignments sent as one datagram to the Unix socket named by
//! `NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

use crate::server::Switch;

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`, or `None` when it is unset or empty (not started by
    /// a service manager that wants notifications: nothing is sent then).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(name) if !name.is_empty() => Notifier::new(&name).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier sending to `name`: a socket path, or `@name` for an abstract socket.
    pub fn new(name: &OsStr) -> io::Result<Notifier> {
        let address = match name.as_bytes() {
            [b'@', abstract_name @ ..] => abstract_address(abstract_name)?,
            _ => SocketAddr::from_pathname(Path::new(name))?,
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            address,
        })
    }

    /// Sends `state`, one or more `VARIABLE=value` lines, as one datagram. The socket is a
    /// datagram socket, so this never blocks on a slow reader.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let sent = self.socket.send_to_addr(state.as_bytes(), &self.address)?;
        if sent != state.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "the notification was cut short",
            ));
        }
        Ok(())
    }
}

/// Tells the service manager, if any, the switch's state; a failure to notify is logged and
/// otherwise ignored, since the switch serves its clients whatever the manager hears.
#[derive(Debug, Default)]
pub struct Readiness {
    notifier: Option<Notifier>,
}

impl Readiness {
    /// Sends through `notifier`; `None` sends nothing.
    pub fn new(notifier: Option<Notifier>) -> Readiness {
        Readiness { notifier }
    }

    /// Whether anything is sent at all.
    pub fn is_enabled(&self) -> bool {
        self.notifier.is_some()
    }

    /// `READY=1`: recovery has finished and every listener accepts connections.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `STOPPING=1`: a graceful shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping: finishing requests in flight");
    }

    /// `STATUS=…`: the one-line status shown by `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    fn send(&self, state: &str) {
        if let Some(notifier) = &self.notifier {
            if let Err(error) = notifier.notify(state) {
                tracing::warn!(%error, "cannot notify the service manager");
            }
        }
    }
}

/// The status line for `systemctl status`: what the switch holds and serves.
pub async fn status_line(switch: &Switch) -> String {
    let connections = switch.open_connections();
    match switch.stats().await {
        Some(stats) => format!(
            "queues: {}, messages: {}, connections: {}",
            stats.queues, stats.messages, connections
        ),
        None => format!("connections: {connections}"),
    }
}

/// Sends the status line every `every` when it has changed, until the switch begins to shut
/// down. When `readiness` is disabled this sends nothing and never returns, so that it can
/// sit in a `select!` beside the shutdown triggers.
pub async fn report_status(switch: Switch, readiness: &Readiness, every: Duration) {
    if !readiness.is_enabled() {
        return std::future::pending().await;
    }
    let mut last = String::new();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !switch.is_stopping() {
        ticks.tick().await;
        let line = status_line(&switch).await;
        if line != last && !switch.is_stopping() {
            readiness.status(&line);
            last = line;
        }
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).expect("bind");
        let notifier = Notifier::new(path.as_os_str()).expect("notifier");
        notifier.notify("READY=1\nSTATUS=ok").expect("sent");
        let mut buffer = [0; 64];
        let length = receiver.recv(&mut buffer).expect("received");
        assert_eq!(&buffer[..length], b"READY=1\nSTATUS=ok");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("message-switch-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
        let receiver = UnixDatagram::bind_addr(&address).expect("bind");
        let notifier = Notifier::new(OsStr::new(&format!("@{name}"))).expect("notifier");
        notifier.notify("STOPPING=1").expect("sent");
        let mut buffer = [0; 64];
        let length = receiver.recv(&mut buffer).expect("received");
        assert_eq!(&buffer[..length], b"STOPPING=1");
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let notifier = Notifier::new(OsStr::new("/nonexistent/notify")).expect("notifier");
        assert!(notifier.notify("READY=1").is_err());
    }
}
