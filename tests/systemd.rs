//! `message-switch` under a (fake) service manager: readiness and status notifications on a
//! `NOTIFY_SOCKET` bound by the test, sockets passed the way systemd passes them (fd 3,
//! `LISTEN_FDS`, `LISTEN_PID` of the switch itself), and plain-text logs.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use command_fds::{CommandFdExt, FdMapping};

use common::process::Spawned;
use common::{wait_until, DEADLINE};

const SWITCH: &str = env!("CARGO_BIN_EXE_message-switch");

/// Two pipelined requests: a session, then `POST /shutdown` (which needs one).
const LOGIN_AND_SHUTDOWN: &[u8] = b"GET /login/t HTTP/1.1\r\ncontent-length: 0\r\n\r\n\
    POST /shutdown HTTP/1.1\r\ncontent-length: 0\r\n\r\n";

/// A fake service manager's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        NotifySocket { socket, path }
    }

    /// The next notification (failing after the deadline).
    fn next(&self) -> String {
        let mut buffer = [0; 4096];
        let length = self
            .socket
            .recv(&mut buffer)
            .expect("a notification arrives");
        String::from_utf8(buffer[..length].to_vec()).expect("UTF-8")
    }

    /// Notifications until one holds `line` as a line; returns that one.
    fn until(&self, line: &str) -> String {
        loop {
            let state = self.next();
            if state.lines().any(|l| l == line) {
                return state;
            }
        }
    }
}

/// The first 12 bytes of the reply on `stream`: `HTTP/1.1 NNN`.
fn status_of(stream: &mut impl Read) -> String {
    let mut status = [0; 12];
    stream.read_exact(&mut status).expect("a reply");
    String::from_utf8_lossy(&status).into_owned()
}

/// `message-switch --path SOCKET` with these extra environment variables.
fn switch_at(socket: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Spawned {
    let mut command = Command::new(SWITCH);
    command.arg("--path").arg(socket);
    for (name, value) in env {
        command.env(name, value);
    }
    Spawned::start(&mut command)
}

fn switch_with_notify(dir: &Path, notify: &NotifySocket) -> (Spawned, PathBuf) {
    let socket = dir.join("sock");
    let switch = switch_at(&socket, &[("NOTIFY_SOCKET", notify.path.as_os_str())]);
    (switch, socket)
}

#[test]
fn ready_only_once_the_socket_accepts_and_stopping_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::bind(dir.path());
    let (mut switch, socket) = switch_with_notify(dir.path(), &notify);
    let first = notify.next();
    assert!(first.starts_with("READY=1\n"), "{first:?}");
    assert_eq!(
        first.lines().nth(1),
        Some("STATUS=queues: 0, messages: 0, connections: 0")
    );
    // Checked after READY=1 arrived: the socket was accepting before it was sent.
    let mut stream = UnixStream::connect(&socket).expect("the socket accepts after READY=1");
    stream
        .write_all(b"GET /login/t HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        .expect("write");
    assert_eq!(status_of(&mut stream), "HTTP/1.1 200", "a reply");
    // The status follows what the switch holds.
    let status = notify.until("STATUS=queues: 0, messages: 0, connections: 1");
    assert!(!status.contains("READY"));
    drop(stream);
    switch.terminate();
    let stopping = notify.until("STOPPING=1");
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    let (success, _) = switch.wait();
    assert!(success, "a graceful stop exits 0");
}

#[test]
fn stopping_on_post_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let notify = NotifySocket::bind(dir.path());
    let (mut switch, socket) = switch_with_notify(dir.path(), &notify);
    notify.until("READY=1");
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream.write_all(LOGIN_AND_SHUTDOWN).expect("write");
    notify.until("STOPPING=1");
    let (success, _) = switch.wait();
    assert!(success);
}

#[test]
fn an_unreachable_notify_socket_is_logged_not_fatal() {
    // The switch serves its clients whatever the service manager hears.
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock");
    let nobody = dir.path().join("nobody-listens");
    let mut switch = switch_at(&socket, &[("NOTIFY_SOCKET", nobody.as_os_str())]);
    let warning = switch.line_containing("cannot notify the service manager");
    assert!(
        warning.contains(" WARN message_switch::systemd::notify: "),
        "{warning:?}"
    );
    UnixStream::connect(&socket).expect("the switch serves anyway");
    switch.terminate();
    assert!(switch.wait().0);
}

/// Starts the switch as systemd would with `fd` as fd 3: `LISTEN_PID` must be the
/// switch's own pid, which only the child knows, so a shell sets it and `exec`s the switch
/// (the pid stays the same across `exec`).
fn activated(fd: OwnedFd, args: &[&std::ffi::OsStr], notify: Option<&Path>) -> Spawned {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg("LISTEN_PID=$$ exec \"$@\"")
        .arg("sh")
        .arg(SWITCH)
        .args(args)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "message-switch.socket")
        .fd_mappings(vec![FdMapping {
            parent_fd: fd,
            child_fd: 3,
        }])
        .expect("fd 3 is free");
    if let Some(notify) = notify {
        command.env("NOTIFY_SOCKET", notify);
    }
    Spawned::start(&mut command)
}

#[test]
fn a_client_of_the_passed_socket_connected_before_the_start_gets_its_answer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sock");
    let listener = UnixListener::bind(&path).expect("bind");
    // The client connects and sends its request while no switch runs: it waits in the
    // socket's backlog, as with systemd holding the socket across a restart.
    let mut early = UnixStream::connect(&path).expect("connect to the held socket");
    early
        .write_all(b"GET /login/early HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        .expect("write");
    early.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let notify = NotifySocket::bind(dir.path());
    // The switch is told the same path: the passed socket stands for it, nothing is bound.
    let mut switch = activated(
        OwnedFd::from(listener),
        &["--path".as_ref(), path.as_os_str()],
        Some(&notify.path),
    );
    assert_eq!(
        status_of(&mut early),
        "HTTP/1.1 200",
        "the early client's answer"
    );
    assert_eq!(
        switch.line_starting("listening on unix "),
        format!(
            "listening on unix {} (passed as message-switch.socket)",
            path.display()
        )
    );
    notify.until("READY=1");
    drop(early);
    switch.terminate();
    let (success, rest) = switch.wait();
    assert!(success);
    assert!(
        !rest.iter().any(|line| line.starts_with("listening on")),
        "nothing else was bound: {rest:?}"
    );
    // The socket file belongs to the service manager: it stays.
    assert!(path.exists(), "the passed socket's file is left in place");
}

#[test]
fn a_passed_tcp_socket_replaces_the_default_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let mut early = std::net::TcpStream::connect(address).expect("connect");
    early
        .write_all(b"GET /login/early HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        .expect("write");
    early.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut switch = activated(OwnedFd::from(listener), &[], None);
    assert_eq!(
        status_of(&mut early),
        "HTTP/1.1 200",
        "the early client's answer"
    );
    assert_eq!(
        switch.line_starting("listening on "),
        format!("listening on tcp {address} (passed as message-switch.socket)")
    );
    switch.terminate();
    let (success, rest) = switch.wait();
    assert!(success);
    assert!(
        !rest.iter().any(|line| line.starts_with("listening on")),
        "the default 127.0.0.1:8080 is not bound when sockets are passed: {rest:?}"
    );
}

#[test]
fn sockets_meant_for_another_process_are_ignored() {
    // LISTEN_PID names the parent (this test), as when the variables leak to a child.
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock");
    let parent = std::process::id().to_string();
    let mut switch = switch_at(
        &socket,
        &[
            ("LISTEN_FDS", "1".as_ref()),
            ("LISTEN_PID", parent.as_ref()),
        ],
    );
    assert_eq!(
        switch.line_starting("listening on "),
        format!("listening on unix {}", socket.display())
    );
    switch.terminate();
    assert!(switch.wait().0);
    assert!(
        !socket.exists(),
        "a socket the switch bound is removed on exit"
    );
}

/// The log file of a short run at the default level: a client leaves cleanly, one hangs up
/// in the middle of a request, then one shuts the switch down. With `as_journal`,
/// `JOURNAL_STREAM` names the log file, as systemd names its stream.
fn log_of_a_short_run(as_journal: bool) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("log");
    let socket = dir.path().join("sock");
    let mut command = Command::new(SWITCH);
    command.arg("--path").arg(&socket).env_remove("RUST_LOG");
    stderr_to_file(&mut command, &log, as_journal);
    let mut switch = Spawned::adopt(command.spawn().expect("message-switch starts"));
    let mut clean = wait_until("the switch listens", || UnixStream::connect(&socket).ok());
    clean
        .write_all(b"GET /login/t HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        .expect("write");
    assert_eq!(status_of(&mut clean), "HTTP/1.1 200");
    drop(clean);
    let mut abrupt = UnixStream::connect(&socket).expect("connect");
    abrupt
        .write_all(b"POST /request/q/r HTTP/1.1\r\ncontent-length: 100\r\n\r\nhalf")
        .expect("write");
    drop(abrupt);
    let mut stream = UnixStream::connect(&socket).expect("connect");
    stream.write_all(LOGIN_AND_SHUTDOWN).expect("write");
    assert!(switch.wait().0, "a clean exit");
    std::fs::read_to_string(&log).expect("the log")
}

/// Sends `command`'s stderr to a new file at `log` (stdin and stdout closed). With
/// `as_journal`, `JOURNAL_STREAM` names that file, as systemd names its stream.
fn stderr_to_file(command: &mut Command, log: &Path, as_journal: bool) {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::create(log).expect("log file");
    let metadata = file.metadata().expect("metadata");
    command
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    if as_journal {
        command.env(
            "JOURNAL_STREAM",
            format!("{}:{}", metadata.dev(), metadata.ino()),
        );
    }
}

/// The log lines that are events (not the `listening on …` announcements).
fn events(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|line| !line.starts_with("listening on "))
        .collect()
}

#[test]
fn logs_written_to_a_file_are_plain_lines_quiet_about_clients() {
    let text = log_of_a_short_run(false);
    assert!(!text.contains('\x1b'), "no escape codes: {text:?}");
    let events = events(&text);
    // Only the shutdown is worth a line at the default level, each with level and target.
    assert_eq!(events.len(), 2, "{text}");
    assert!(
        events[0].ends_with(" INFO message_switch::server::driver: shutting down"),
        "{text}"
    );
    assert!(
        events[1].ends_with(" INFO message_switch: stopped"),
        "{text}"
    );
    // A timestamp first: 2026-12-02T06:00:00.000000Z.
    assert!(
        events[0].chars().next().is_some_and(|c| c.is_ascii_digit()),
        "{text}"
    );
}

#[test]
fn logs_to_the_journal_carry_priorities_and_no_time() {
    let text = log_of_a_short_run(true);
    assert_eq!(
        events(&text),
        vec![
            "<6> INFO message_switch::server::driver: shutting down",
            "<6> INFO message_switch: stopped",
        ],
        "{text}"
    );
}

/// The line saying why the switch cannot start is an error entry in the journal (`<3>`),
/// not one at the stream's default priority (info), and a plain line elsewhere.
#[test]
fn the_reason_the_switch_cannot_start_is_an_error_in_the_journal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("message-switch.conf");
    std::fs::write(&config, "((path /tmp/x)").expect("write the config");
    for as_journal in [false, true] {
        let log = dir.path().join(format!("log-{as_journal}"));
        let mut command = Command::new(SWITCH);
        command.arg("--config").arg(&config);
        stderr_to_file(&mut command, &log, as_journal);
        let status = command.status().expect("message-switch runs");
        assert_eq!(status.code(), Some(1));
        let text = std::fs::read_to_string(&log).expect("the log");
        let prefix = if as_journal {
            "<3>message-switch: "
        } else {
            "message-switch: "
        };
        assert!(text.starts_with(prefix), "{text:?}");
        assert!(text.contains(&config.display().to_string()), "{text:?}");
        assert_eq!(text.lines().count(), 1, "{text:?}");
    }
}
