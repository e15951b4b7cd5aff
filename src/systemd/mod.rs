//! Running under systemd (or any service manager speaking its protocols): readiness and
//! status notifications ([`notify`]) and socket activation ([`activation`]).
//!
//! Both are inert outside a service manager: without `NOTIFY_SOCKET` nothing is sent, and
//! without `LISTEN_PID`/`LISTEN_FDS` naming this process no socket is taken.

pub mod activation;
pub mod notify;
