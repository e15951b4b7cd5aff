//! Who a client is: the unit that the per-client limits count against and that the driver's
//! fair scheduling takes turns between (docs/architecture.md, "Clients").
//!
//! A connection's client is read once, when it is accepted, from the kernel, never from what
//! the peer says: on the Unix socket the peer's credentials (`SO_PEERCRED`: uid and pid of
//! the process that connected), on TCP the peer's IP address without the port. The session
//! token is not used: it is chosen by the client, a connection has none until it logs in, and
//! the real toolstack logs in every connection under the same few names anyway.
//!
//! One process is therefore one client on the Unix socket, however many connections it
//! opens: xapi, xenopsd, squeezed… each count as one, and so does a script that reconnects
//! in a loop. A shell loop that starts a new process per connection is a new client each
//! time; the switch-wide `--connections-max` bounds those.

use std::fmt;
use std::net::IpAddr;

/// The identity of the peer of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientId {
    /// A process on this host, connected over the Unix socket.
    Local {
        /// Its user id.
        uid: u32,
        /// Its process id (absent if the kernel did not report one).
        pid: Option<i32>,
    },
    /// A peer on TCP, by IP address (every port of one address is one client).
    Remote(IpAddr),
    /// A listener that cannot tell its peers apart (all its connections are one client).
    Unidentified,
}

impl fmt::Display for ClientId {
    /// The label used in `/metrics`, the console and the logs: `uid=0 pid=1234`,
    /// `ip=127.0.0.1`, `unidentified`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientId::Local {
                uid,
                pid: Some(pid),
            } => write!(f, "uid={uid} pid={pid}"),
            ClientId::Local { uid, pid: None } => write!(f, "uid={uid}"),
            ClientId::Remote(ip) => write!(f, "ip={ip}"),
            ClientId::Unidentified => f.write_str("unidentified"),
        }
    }
}

impl ClientId {
    /// The client at the other end of a Unix socket: its credentials, or `Unidentified` if
    /// the kernel cannot give them.
    pub fn of_unix(stream: &tokio::net::UnixStream) -> ClientId {
        match stream.peer_cred() {
            Ok(credentials) => ClientId::Local {
                uid: credentials.uid(),
                pid: credentials.pid(),
            },
            Err(_) => ClientId::Unidentified,
        }
    }

    /// The client at the other end of a TCP connection from `peer`.
    pub fn of_tcp(peer: std::net::SocketAddr) -> ClientId {
        // An IPv4 peer seen on a dual-stack socket is the same client as on an IPv4 one.
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            ip => ip,
        };
        ClientId::Remote(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_name_the_process_or_the_address() {
        let local = ClientId::Local {
            uid: 0,
            pid: Some(42),
        };
        assert_eq!(local.to_string(), "uid=0 pid=42");
        assert_eq!(ClientId::Local { uid: 7, pid: None }.to_string(), "uid=7");
        let remote = ClientId::of_tcp("[::ffff:10.0.0.1]:8080".parse().unwrap());
        assert_eq!(remote, ClientId::of_tcp("10.0.0.1:1".parse().unwrap()));
        assert_eq!(remote.to_string(), "ip=10.0.0.1");
        assert_eq!(ClientId::Unidentified.to_string(), "unidentified");
    }

    #[tokio::test]
    async fn a_unix_peer_is_this_process() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let expected_pid = i32::try_from(std::process::id()).unwrap();
        match ClientId::of_unix(&ours) {
            ClientId::Local { pid, .. } => assert_eq!(pid, Some(expected_pid)),
            other => panic!("not a local client: {other}"),
        }
    }
}
