//! Socket activation: the listening sockets a service manager passes to the process
//! (`LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`; the sockets are fds 3, 4, …).
//!
//! The sockets are taken over by the `listenfd` crate, which checks each fd's type, so this
//! crate needs no `unsafe`.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::path::Path;

/// One listening socket passed by the service manager.
#[derive(Debug)]
pub enum Passed {
    /// A Unix stream socket.
    Unix {
        /// The socket, marked close-on-exec.
        listener: UnixListener,
        /// Its name from `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`), if given.
        name: Option<String>,
    },
    /// A TCP socket.
    Tcp {
        /// The socket, marked close-on-exec.
        listener: TcpListener,
        /// Its name from `LISTEN_FDNAMES`, if given.
        name: Option<String>,
    },
}

/// Why the passed sockets cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a number.
    #[error("LISTEN_FDS is not a number of file descriptors: {0:?}")]
    BadCount(String),
    /// A passed fd is neither kind of listening socket the switch serves.
    #[error("fd {fd} passed by the service manager is neither a Unix stream socket nor a TCP socket: {reason}")]
    NotAListener {
        /// The fd.
        fd: usize,
        /// Why the Unix check failed (the TCP one failed too).
        reason: io::Error,
    },
}

/// The first passed fd, by the protocol.
const FIRST_FD: usize = 3;

/// Takes the sockets passed to this process: none unless `LISTEN_PID` is this process's id
/// (a variable inherited from a parent is for the parent) and `LISTEN_FDS` is set.
pub fn passed_listeners() -> Result<Vec<Passed>, ActivationError> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let Some(count) = std::env::var_os("LISTEN_FDS").filter(|_| for_us) else {
        return Ok(Vec::new());
    };
    let count = count.to_string_lossy().into_owned();
    count
        .trim()
        .parse::<usize>()
        .map_err(|_| ActivationError::BadCount(count.clone()))?;
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    // listenfd reads LISTEN_FDS itself; LISTEN_PID has been checked above.
    let mut fds = listenfd::ListenFd::from_env();
    let mut passed = Vec::new();
    for index in 0..fds.len() {
        let name = names.get(index).filter(|name| !name.is_empty()).cloned();
        let fd = FIRST_FD + index;
        match fds.take_unix_listener(index) {
            Ok(Some(listener)) => passed.push(Passed::Unix { listener, name }),
            Ok(None) => {}
            Err(unix_error) => match fds.take_tcp_listener(index) {
                Ok(Some(listener)) => passed.push(Passed::Tcp { listener, name }),
                Ok(None) => {}
                Err(_) => {
                    return Err(ActivationError::NotAListener {
                        fd,
                        reason: unix_error,
                    })
                }
            },
        }
    }
    Ok(passed)
}

/// What the options ask to listen on, less what the passed sockets already serve: a passed
/// Unix socket bound to the `path` file stands for it, a passed TCP socket at one of the
/// `tcp` addresses stands for that address. Other passed sockets are served in addition.
pub fn still_to_bind<'a>(
    passed: &[Passed],
    tcp: &[SocketAddr],
    path: Option<&'a Path>,
) -> (Vec<SocketAddr>, Option<&'a Path>) {
    let path = path.filter(|path| {
        !passed.iter().any(|socket| match socket {
            Passed::Unix { listener, .. } => is_bound_to(listener, path),
            Passed::Tcp { .. } => false,
        })
    });
    let tcp = tcp
        .iter()
        .filter(|address| {
            !passed.iter().any(|socket| match socket {
                Passed::Tcp { listener, .. } => listener.local_addr().ok() == Some(**address),
                Passed::Unix { .. } => false,
            })
        })
        .copied()
        .collect();
    (tcp, path)
}

/// Whether `listener` is bound to the socket file at `path`, compared as files (device and
/// inode) so that `/var/run/x` and `/run/x` are the same socket when `/var/run` links to
/// `/run`.
pub fn is_bound_to(listener: &UnixListener, path: &Path) -> bool {
    let Ok(address) = listener.local_addr() else {
        return false;
    };
    let Some(bound) = address.as_pathname() else {
        return false;
    };
    match (std::fs::metadata(bound), std::fs::metadata(path)) {
        (Ok(bound), Ok(wanted)) => bound.dev() == wanted.dev() && bound.ino() == wanted.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_sockets_stand_for_the_same_path_or_address() {
        let dir = tempfile::tempdir().expect("temp dir");
        let unix = UnixListener::bind(dir.path().join("sock")).expect("bind");
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind");
        let passed_tcp = tcp.local_addr().expect("address");
        let passed = [
            Passed::Unix {
                listener: unix,
                name: None,
            },
            Passed::Tcp {
                listener: tcp,
                name: Some("tcp".into()),
            },
        ];
        let other: SocketAddr = "127.0.0.1:1".parse().expect("address");
        let same_path = dir.path().join("sock");
        let other_path = dir.path().join("other");
        assert_eq!(
            still_to_bind(&passed, &[passed_tcp, other], Some(&same_path)),
            (vec![other], None)
        );
        assert_eq!(
            still_to_bind(&passed, &[], Some(&other_path)),
            (vec![], Some(other_path.as_path()))
        );
        assert_eq!(still_to_bind(&[], &[other], None), (vec![other], None));
    }

    #[test]
    fn a_socket_is_recognised_through_a_symbolic_link() {
        let dir = tempfile::tempdir().expect("temp dir");
        let real = dir.path().join("run");
        std::fs::create_dir(&real).expect("dir");
        std::os::unix::fs::symlink(&real, dir.path().join("var-run")).expect("link");
        let listener = UnixListener::bind(real.join("sock")).expect("bind");
        assert!(is_bound_to(&listener, &dir.path().join("var-run/sock")));
        assert!(is_bound_to(&listener, &real.join("sock")));
        assert!(!is_bound_to(&listener, &real.join("other")));
        let _other = UnixListener::bind(real.join("other")).expect("bind");
        assert!(!is_bound_to(&listener, &real.join("other")));
    }
}
