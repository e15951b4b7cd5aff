//! The command line of `message-cli`: its global options and subcommands.
//!
//! The definition lives in the library rather than in the binary so that other tools (the
//! man page and shell completion generators) see exactly what the binary parses:
//! [`command`] is the `clap::Command`, [`Cli`] the parsed result.

use std::ffi::OsString;
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::protocol::numbers;

/// The `clap::Command` of `message-cli`, as the binary parses it (for man pages and
/// completions).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Interact with a message switch.
#[derive(Debug, Parser)]
#[command(
    name = "message-cli",
    version,
    propagate_version = true,
    after_help = "Which switch: --path SOCK, else --addr HOST:PORT, else $MESSAGE_SWITCH_PATH, \
                  else $MESSAGE_SWITCH_ADDR, else the Unix socket \
                  /var/run/message-switch/sock if it exists, else TCP 127.0.0.1:8080."
)]
pub struct Cli {
    /// TCP address of the switch (the default is explained by `message-cli --help`).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub addr: Option<String>,

    /// Connect to the switch's Unix socket at SOCK (wins over --addr).
    #[arg(long, global = true, value_name = "SOCK")]
    pub path: Option<PathBuf>,

    /// More output: debug logs, and payloads in full in `diagnostics`.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Debug logs (as RUST_LOG=debug; RUST_LOG itself wins).
    #[arg(long, global = true)]
    pub debug: bool,

    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The original's socket, which `message-cli` uses when it exists and nothing else is asked.
pub const DEFAULT_PATH: &str = "/var/run/message-switch/sock";

/// The TCP address used when nothing else is asked and [`DEFAULT_PATH`] does not exist.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Where to reach the switch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT`.
    Tcp(String),
}

impl Cli {
    /// The switch to talk to, in the order `--help` states: `--path`, `--addr`, the
    /// variables `MESSAGE_SWITCH_PATH` and `MESSAGE_SWITCH_ADDR` (read through `env`), the
    /// socket at `default_path` if it exists, else [`DEFAULT_ADDR`]. The second value says
    /// what was not used on the way, for an error message ("no socket at …").
    pub fn endpoint(
        &self,
        env: impl Fn(&str) -> Option<OsString>,
        default_path: &Path,
    ) -> (Endpoint, Option<String>) {
        let set = |name: &str| env(name).filter(|value| !value.is_empty());
        if let Some(path) = &self.path {
            (Endpoint::Unix(path.clone()), None)
        } else if let Some(addr) = &self.addr {
            (Endpoint::Tcp(addr.clone()), None)
        } else if let Some(path) = set("MESSAGE_SWITCH_PATH") {
            (Endpoint::Unix(PathBuf::from(path)), None)
        } else if let Some(addr) = set("MESSAGE_SWITCH_ADDR") {
            let addr = addr.to_string_lossy().into_owned();
            (Endpoint::Tcp(addr), None)
        } else if default_path.exists() {
            (Endpoint::Unix(default_path.to_path_buf()), None)
        } else {
            let skipped = format!("there is no socket at {}", default_path.display());
            (Endpoint::Tcp(DEFAULT_ADDR.to_owned()), Some(skipped))
        }
    }

    /// The log filter the flags ask for, when `RUST_LOG` is not set.
    pub fn log_filter(&self) -> &'static str {
        if self.verbose || self.debug {
            "debug"
        } else {
            "info"
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "{}", path.display()),
            Endpoint::Tcp(addr) => f.write_str(addr),
        }
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// List the queues that have a listener (every queue with --all), one per line.
    List {
        /// Only list queues whose name starts with PREFIX.
        #[arg(long, value_name = "PREFIX", default_value = "")]
        prefix: String,
        /// List every queue, even those no process has listened on.
        #[arg(long)]
        all: bool,
    },
    /// Perform a remote procedure call and print the reply.
    ///
    /// The request body comes from --body, from --file, or else from standard input (one
    /// trailing newline is dropped, as the original did). If QUEUE does not exist it is
    /// created, so the call waits for the service to start.
    Call {
        /// The service to call.
        queue: String,
        /// The request body.
        #[arg(long, value_name = "BODY", conflicts_with = "file")]
        body: Option<String>,
        /// Read the request body from FILE.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Give up after this many seconds (fractions allowed) without a reply.
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        timeout: Option<Duration>,
        /// Fail if QUEUE does not exist instead of creating it.
        #[arg(long)]
        no_create: bool,
    },
    /// Answer remote procedure calls sent to QUEUE until interrupted.
    ///
    /// With --program, PROGRAM is run by `/bin/sh -c` once per request, with the request body
    /// on its standard input; its standard output (minus one trailing newline) is the reply.
    /// Without it, each request is printed and the reply is read from the terminal, up to a
    /// line holding a single ".".
    Serve {
        /// The service name (queue) to serve.
        queue: String,
        /// The command that computes each reply.
        #[arg(long, value_name = "PROGRAM")]
        program: Option<String>,
        /// How many requests may be handled at once (in arrival order when 1).
        #[arg(long, value_name = "N", default_value = "1")]
        concurrency: NonZeroUsize,
    },
    /// Dump the switch's state: services, queued requests and waiting callers.
    Diagnostics,
    /// Display the most recent trace events captured by the switch.
    Tail {
        /// Keep waiting for new events and print them as they come.
        #[arg(long)]
        follow: bool,
    },
    /// Display the most recent trace events in mscgen input format.
    Mscgen,
    /// Acknowledge a message, removing it from its queue.
    Ack {
        /// The queue holding the message.
        queue: String,
        /// The message's number within the queue.
        #[arg(value_parser = parse_message_number)]
        id: i64,
    },
    /// Destroy a queue, with all the messages in it.
    Destroy {
        /// The queue to destroy.
        queue: String,
    },
    /// Ask the switch to shut down cleanly.
    Shutdown,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("not a number of seconds: {text}"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("not a valid duration: {text}"))
}

fn parse_message_number(text: &str) -> Result<i64, String> {
    numbers::parse_int64(text).ok_or_else(|| format!("not a message number: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(args: &[&str], env: &[(&str, &str)], default_path: &Path) -> Endpoint {
        let cli = Cli::try_parse_from(["message-cli"].iter().chain(args).chain(&["list"]))
            .expect("valid arguments");
        let env = |name: &str| {
            env.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        };
        cli.endpoint(env, default_path).0
    }

    #[test]
    fn the_endpoint_follows_the_documented_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("sock");
        let absent = dir.path().join("absent");
        let unix = |path: &str| Endpoint::Unix(PathBuf::from(path));
        let tcp = |addr: &str| Endpoint::Tcp(addr.to_owned());
        let both = [
            ("MESSAGE_SWITCH_PATH", "/env/sock"),
            ("MESSAGE_SWITCH_ADDR", "h:1"),
        ];
        assert_eq!(
            endpoint(&["--path=/s", "--addr", "a:1"], &both, &absent),
            unix("/s")
        );
        assert_eq!(endpoint(&["--addr", "a:1"], &both, &absent), tcp("a:1"));
        assert_eq!(endpoint(&[], &both, &absent), unix("/env/sock"));
        assert_eq!(endpoint(&[], &both[1..], &absent), tcp("h:1"));
        // Empty variables count as unset.
        let empty = [("MESSAGE_SWITCH_PATH", ""), ("MESSAGE_SWITCH_ADDR", "")];
        assert_eq!(endpoint(&[], &empty, &absent), tcp(DEFAULT_ADDR));
        std::fs::write(&socket, "").expect("a file standing for the socket");
        assert_eq!(endpoint(&[], &[], &socket), Endpoint::Unix(socket.clone()));
        assert_eq!(endpoint(&[], &[], &absent), tcp(DEFAULT_ADDR));
    }

    #[test]
    fn the_fallback_says_what_it_skipped() {
        let cli = Cli::try_parse_from(["message-cli", "list"]).expect("valid");
        let (endpoint, skipped) = cli.endpoint(|_| None, Path::new("/nonexistent/sock"));
        assert_eq!(endpoint, Endpoint::Tcp(DEFAULT_ADDR.to_owned()));
        assert_eq!(
            skipped.as_deref(),
            Some("there is no socket at /nonexistent/sock")
        );
    }

    #[test]
    fn the_original_common_options_are_accepted_after_the_command() {
        let cli = Cli::try_parse_from(["message-cli", "diagnostics", "-v", "--debug", "--path=/s"])
            .expect("valid");
        assert!(cli.verbose && cli.debug);
        assert_eq!(cli.path.as_deref(), Some(Path::new("/s")));
        assert_eq!(cli.log_filter(), "debug");
    }
}
