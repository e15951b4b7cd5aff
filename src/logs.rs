//! The binaries' logs: one event per line on stderr, with time, level and target, coloured
//! only on a terminal so that syslog and the journal receive plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` filters (see `tracing_subscriber::EnvFilter`),
/// else `default_filter` (e.g. `info`). ANSI colours only when stderr is a terminal.
/// `with_target` adds the module that logged each event.
pub fn init(default_filter: &str, with_target: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(with_target)
        .init();
}
