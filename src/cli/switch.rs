//! The command line of `message-switch`: every option, its default and its help text.
//!
//! The definition lives in the library rather than in the binary so that other tools (the
//! man page and shell completion generators, the config-file reader) see exactly the options
//! the binary parses: [`command`] is the `clap::Command`, [`Args`] the parsed result.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::engine;
use crate::server::{ClientLimits, Config};
use crate::store;

/// The `clap::Command` of `message-switch`, as the binary parses it (for man pages,
/// completions and the config file's field list).
pub fn command() -> clap::Command {
    Args::command()
}

/// The id of the `--config` option, for [`crate::config::merge`].
pub const CONFIG_ID: &str = "config";

/// The message switch: a store-and-forward broker for RPC between toolstack services.
#[derive(Parser, Debug)]
#[command(name = "message-switch", version, about, long_about = None)]
pub struct Args {
    /// Read options from FILE: the original's s-expression record, e.g.
    /// ((path /var/run/message-switch/sock) (pidfile ())), in which every long option below
    /// is also a field, e.g. (listen (127.0.0.1:8080)) or (queues-max 5000). An option given
    /// on the command line overrides the file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// TCP address to listen on (repeatable). Default: 127.0.0.1:8080, unless --path is
    /// given or systemd passes listening sockets.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Vec<SocketAddr>,

    /// Unix socket to listen on. A stale socket file is replaced; a socket passed by systemd
    /// at this path is served instead of binding it.
    #[arg(long, value_name = "SOCK")]
    pub path: Option<PathBuf>,

    /// Permissions of the Unix socket file, in octal.
    #[arg(long, value_name = "MODE", default_value = "600", value_parser = parse_octal_mode)]
    pub socket_mode: u32,

    /// Write the process id to this file (truncated first) and remove it on exit.
    #[arg(long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Most events the trace keeps.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().trace_entries_max)]
    pub trace_entries: usize,

    /// Most bytes the trace keeps.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().trace_bytes_max)]
    pub trace_bytes_max: usize,

    /// Strings in traced payloads of at least this many bytes are cut.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().trace_truncate_bytes)]
    pub trace_truncate: usize,

    /// Largest request body accepted.
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().body_bytes_max)]
    pub body_bytes_max: usize,

    /// Longest queue name or session token.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().name_bytes_max)]
    pub name_bytes_max: usize,

    /// Most payload bytes in one Transfer reply (it always holds at least one message; the
    /// client continues from `next`).
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().transfer_reply_bytes_max)]
    pub transfer_reply_bytes_max: usize,

    /// Most distinct session tokens one connection may log in with.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().logins_per_connection_max)]
    pub logins_per_connection_max: usize,

    /// Most queues at once.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().queues_max)]
    pub queues_max: usize,

    /// Most messages in one queue.
    #[arg(long, value_name = "N", default_value_t = engine::Config::default().queue_messages_max)]
    pub queue_messages_max: usize,

    /// Most payload bytes one queue may hold; a Send past it gets 429 naming the queue, so
    /// that one flooded queue refuses only its own Sends. Default: a quarter of
    /// --stored-bytes-max.
    #[arg(long, value_name = "BYTES")]
    pub queue_bytes_max: Option<usize>,

    /// Most payload bytes stored in all queues together.
    #[arg(long, value_name = "BYTES", default_value_t = engine::Config::default().stored_bytes_max)]
    pub stored_bytes_max: usize,

    /// Longest Transfer or Trace wait a client may ask for, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = engine::Config::default().wait_timeout_max.as_secs_f64())]
    pub wait_timeout_max: f64,

    /// Most connections open at once.
    #[arg(long, value_name = "N", default_value_t = Config::default().connections_max)]
    pub connections_max: usize,

    /// Most connections one client may have open at once (a client is a process on the Unix
    /// socket, an IP address on TCP); further ones get 429 and are closed.
    #[arg(long, value_name = "N", default_value_t = ClientLimits::default().connections_max)]
    pub client_connections_max: usize,

    /// New connections per second one client may sustain after its burst: faster ones are
    /// held back (up to a second), then refused with 429. 0: no limit.
    #[arg(long, value_name = "RATE", default_value_t = ClientLimits::default().connects_per_second)]
    pub client_connects_per_second: f64,

    /// New connections one client may open at once before --client-connects-per-second
    /// applies.
    #[arg(long, value_name = "N", default_value_t = ClientLimits::default().connect_burst,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub client_connect_burst: u32,

    /// Longest hold, in seconds, of a 429 on a connection that keeps being refused: after 8
    /// refusals in a row each next one is held 1 ms, doubling up to this, so that a client
    /// flooding a full queue slows itself and not the switch. 0: never hold.
    #[arg(long, value_name = "SECONDS",
          default_value_t = Config::default().refusal_delay_max.as_secs_f64())]
    pub refusal_delay_max: f64,

    /// Seconds a connection may take to send a request head once it has started one (and
    /// then its body); slower ones are closed. Idle connections are never timed out. 0: no
    /// limit.
    #[arg(long, value_name = "SECONDS",
          default_value_t = Config::default().request_head_timeout.map_or(0.0, |t| t.as_secs_f64()))]
    pub request_head_timeout: f64,

    /// Most queues given their own series in /metrics (the deepest ones).
    #[arg(long, value_name = "N", default_value_t = Config::default().metrics_queues_max)]
    pub metrics_queues_max: usize,

    /// Threads that run connections and the engine: 1 is a single-threaded runtime (the
    /// original is single-threaded too, and the switch is mostly idle between requests).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,

    /// Keep queues and messages in this directory (created if missing), so that they survive
    /// restarts and crashes: a 200 reply to a change then means it is on disk.
    #[arg(long, value_name = "DIR")]
    pub statedir: Option<PathBuf>,

    /// With --statedir: if the journal or snapshot is corrupt, keep every intact record
    /// instead of refusing to start (damaged files are kept with a .salvaged suffix).
    #[arg(long, requires = "statedir")]
    pub salvage: bool,

    /// With --statedir: what to do with the original message-switch's state (queues.sexp,
    /// redo-log) found there. auto: import its persistent queues and messages into the
    /// journal once, then move its files into imported-<UTC time>/; no: leave them unread.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = StatedirImport::Auto)]
    pub statedir_import: StatedirImport,

    /// With --statedir: compact (replace the journal by a snapshot) once the journal holds at
    /// least this many bytes…
    #[arg(long, value_name = "BYTES", default_value_t = store::Options::default().compaction_bytes_min)]
    pub compaction_bytes_min: u64,

    /// …and at least this many times the size of the last snapshot.
    #[arg(long, value_name = "RATIO", default_value_t = store::Options::default().compaction_ratio)]
    pub compaction_ratio: f64,

    /// With --statedir: the nice value of the journal writer thread, which every reply to a
    /// change waits for (-20 to 19; 0 leaves it at the process's). Lowering it below the
    /// process's needs CAP_SYS_NICE (root has it); without it the thread keeps its priority.
    #[arg(long, value_name = "NICE", default_value_t = store::WRITER_NICE_DEFAULT,
          allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub journal_writer_nice: i32,

    /// With --statedir: when an Ack is answered. strict: once the ack is on disk, so an
    /// acked message never comes back. lazy: at once, the ack being written with the next
    /// group commit; after a crash, messages acked just before it may be delivered again.
    #[arg(long, value_name = "MODE", default_value = "strict", value_parser = parse_ack_sync)]
    pub ack_sync: engine::AckSync,
}

fn parse_ack_sync(text: &str) -> Result<engine::AckSync, String> {
    text.parse()
}

/// The values of `--statedir-import`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatedirImport {
    /// Import the original's state if it is there and the journal is not.
    Auto,
    /// Leave the original's files unread.
    No,
}

impl Args {
    /// Parses the command line `argv` (program name first) completed by the config file it
    /// names, if any: clap's own errors (and `--help`, `--version`) exit the process as
    /// `Args::parse` does; a bad config file is returned as an error.
    pub fn from_argv(argv: Vec<std::ffi::OsString>) -> Result<Args, crate::config::ConfigError> {
        let argv = crate::config::merge(&command(), CONFIG_ID, argv)?;
        Ok(Args::parse_from(argv))
    }

    /// The server configuration these options describe, or why they are inconsistent.
    pub fn config(&self) -> Result<Config, String> {
        if !(self.request_head_timeout.is_finite() && self.request_head_timeout >= 0.0) {
            return Err("--request-head-timeout must be a non-negative number of seconds".into());
        }
        if !(self.wait_timeout_max.is_finite() && self.wait_timeout_max >= 0.0) {
            return Err("--wait-timeout-max must be a non-negative number of seconds".into());
        }
        if !(self.client_connects_per_second.is_finite() && self.client_connects_per_second >= 0.0)
        {
            return Err("--client-connects-per-second must be a non-negative number".into());
        }
        let refusal_delay_max = Duration::try_from_secs_f64(self.refusal_delay_max)
            .map_err(|_| "--refusal-delay-max must be a non-negative number of seconds")?;
        if !(self.compaction_ratio.is_finite() && self.compaction_ratio >= 0.0) {
            return Err("--compaction-ratio must be a non-negative number".into());
        }
        // The journal stores lengths in 32 bits.
        if self.statedir.is_some() && self.body_bytes_max >= u32::MAX as usize {
            return Err("--body-bytes-max must be below 4 GiB with --statedir".into());
        }
        Ok(Config {
            engine: engine::Config {
                name_bytes_max: self.name_bytes_max,
                queues_max: self.queues_max,
                queue_messages_max: self.queue_messages_max,
                queue_bytes_max: self
                    .queue_bytes_max
                    .unwrap_or_else(|| engine::default_queue_bytes_max(self.stored_bytes_max)),
                stored_bytes_max: self.stored_bytes_max,
                wait_timeout_max: Duration::from_secs_f64(self.wait_timeout_max),
                trace_entries_max: self.trace_entries,
                trace_bytes_max: self.trace_bytes_max,
                trace_truncate_bytes: self.trace_truncate,
                transfer_reply_bytes_max: self.transfer_reply_bytes_max,
                logins_per_connection_max: self.logins_per_connection_max,
                ack_sync: self.ack_sync,
            },
            body_bytes_max: self.body_bytes_max,
            connections_max: self.connections_max,
            client_limits: ClientLimits {
                connections_max: self.client_connections_max,
                connects_per_second: self.client_connects_per_second,
                connect_burst: self.client_connect_burst,
            },
            refusal_delay_max,
            request_head_timeout: (self.request_head_timeout > 0.0)
                .then(|| Duration::from_secs_f64(self.request_head_timeout)),
            metrics_queues_max: self.metrics_queues_max,
            journal: store::Options {
                compaction_bytes_min: self.compaction_bytes_min,
                compaction_ratio: self.compaction_ratio,
                salvage: self.salvage,
                writer_nice: self.journal_writer_nice,
                original_import: match self.statedir_import {
                    StatedirImport::Auto => store::OriginalImport::Auto,
                    StatedirImport::No => store::OriginalImport::No,
                },
                ..store::Options::default()
            },
            ..Config::default()
        })
    }
}

fn parse_octal_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|mode| *mode <= 0o7777)
        .ok_or_else(|| format!("not an octal file mode: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_of(argv: &[&str], file: &str) -> Config {
        let argv: Vec<std::ffi::OsString> = ["message-switch", "--config", "switch.conf"]
            .iter()
            .chain(argv)
            .map(Into::into)
            .collect();
        let merged = crate::config::merge_text(
            &command(),
            CONFIG_ID,
            argv,
            std::path::Path::new("switch.conf"),
            file,
        )
        .expect("the file reads");
        Args::parse_from(merged)
            .config()
            .expect("consistent options")
    }

    /// The per-queue byte limit defaults to a quarter of the switch-wide one, whatever that
    /// is, so that a lowered store still isolates its queues; the flag and the config-file
    /// field both set it, the flag winning.
    #[test]
    fn the_queue_byte_limit_defaults_to_a_quarter_of_the_store() {
        let engine = |argv: &[&str], file: &str| config_of(argv, file).engine;
        let default = engine(&[], "()");
        assert_eq!(default.queue_bytes_max, 1 << 30);
        assert_eq!(default.stored_bytes_max, 4 << 30);
        assert_eq!(
            engine(&["--stored-bytes-max", "1000"], "()").queue_bytes_max,
            250
        );
        assert_eq!(
            engine(&[], "((stored-bytes-max 1000) (queue-bytes-max 7))").queue_bytes_max,
            7
        );
        assert_eq!(
            engine(&["--queue-bytes-max", "9"], "((queue-bytes-max 7))").queue_bytes_max,
            9
        );
    }
}
