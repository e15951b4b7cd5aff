//! The binaries' logs: one event per line on stderr, with level and target, coloured only on
//! a terminal so that syslog and the journal receive plain text.
//!
//! When stderr is the systemd journal's stream (`JOURNAL_STREAM` names stderr's device and
//! inode), each line starts with the kernel-style priority `<N>` that the journal turns into
//! the entry's priority (so `journalctl -p warning` finds the warnings), and carries no
//! timestamp, since the journal records its own.

use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` filters (see `tracing_subscriber::EnvFilter`),
/// else `default_filter` (e.g. `info`). ANSI colours only when stderr is a terminal;
/// priority prefixes and no timestamps when stderr is the journal. `with_target` adds the
/// module that logged each event.
pub fn init(default_filter: &str, with_target: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if stderr_is_the_journal() {
        let format = format()
            .with_ansi(false)
            .with_target(with_target)
            .without_time();
        builder.event_format(Priority(format)).init();
    } else {
        let format = format()
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(with_target);
        builder.event_format(format).init();
    }
}

/// What to put before a line written to stderr outside the subscriber (such as `main`'s
/// final error): `<3>` (error) when stderr is the journal, so that the reason the switch
/// stopped is an error entry (`journalctl -p err` finds it) rather than the stream's default
/// priority, info; nothing otherwise.
pub fn error_line_prefix() -> &'static str {
    if stderr_is_the_journal() {
        "<3>"
    } else {
        ""
    }
}

/// The default one-line format.
fn format() -> format::Format {
    format::Format::default()
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, set by systemd) names this process's stderr;
/// a value inherited by a process whose stderr was redirected does not match.
fn stderr_is_the_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stderr) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_is(&stream.to_string_lossy(), stderr.dev(), stderr.ino())
}

/// Whether `JOURNAL_STREAM`'s `DEVICE:INODE` is `device` and `inode`.
fn journal_stream_is(stream: &str, device: u64, inode: u64) -> bool {
    let mut parts = stream.trim().splitn(2, ':');
    let number = |part: Option<&str>| part.and_then(|part| part.parse::<u64>().ok());
    number(parts.next()) == Some(device) && number(parts.next()) == Some(inode)
}

/// Prefixes each event with its syslog priority, `<3>` (error) to `<7>` (debug).
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(context, writer, event)
    }
}

/// The syslog priority of a level.
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_stream_must_name_this_device_and_inode() {
        assert!(journal_stream_is("8:1234", 8, 1234));
        assert!(!journal_stream_is("8:1234", 8, 1235));
        assert!(!journal_stream_is("9:1234", 8, 1234));
        assert!(!journal_stream_is("8", 8, 1234));
        assert!(!journal_stream_is("", 8, 1234));
        assert!(!journal_stream_is("x:y", 8, 1234));
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::TRACE), 7);
    }
}
