//! The command line of `message-cli`: its global options and subcommands.
//!
//! The definition lives in the library rather than in the binary so that other tools (the
//! man page and shell completion generators) see exactly what the binary parses:
//! [`command`] is the `clap::Command`, [`Cli`] the parsed result.

use std::num::NonZeroUsize;
use std::path::PathBuf;
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
#[command(name = "message-cli", version, propagate_version = true)]
pub struct Cli {
    /// TCP address of the switch.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:8080"
    )]
    pub addr: String,

    /// Connect to the switch's Unix socket at SOCK instead of --addr.
    #[arg(long, global = true, value_name = "SOCK")]
    pub path: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub action: Action,
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
    Diagnostics {
        /// Print payloads in full instead of cutting them at 70 bytes.
        #[arg(short, long)]
        verbose: bool,
    },
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
