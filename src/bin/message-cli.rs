//! `message-cli`: talk to a message switch from the command line (list queues, make and serve
//! RPCs, inspect the switch). The output of `list`, `diagnostics`, `tail` and `mscgen` is
//! that of the original OCaml `message-cli`, with its cosmetic bugs fixed (see
//! `message_switch::client::format`).

use std::io::{IsTerminal, Read, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use bytes::Bytes;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};

use message_switch::cli::message_cli::{Action, Cli, Endpoint, DEFAULT_PATH};
use message_switch::client::{
    self, default_token, format, CallOptions, Client, ClientConfig, Connection, Connector,
    Incoming, ServeOptions, TcpConnector, UnixConnector,
};
use message_switch::protocol::{MessageId, QueueName};

fn main() -> ExitCode {
    let cli = Cli::parse();
    message_switch::logs::init(cli.log_filter(), false);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("message-cli: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("message-cli: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (endpoint, skipped) = cli.endpoint(|name| std::env::var_os(name), Path::new(DEFAULT_PATH));
    let tried = Tried {
        endpoint: endpoint.to_string(),
        skipped,
    };
    let action = cli.action;
    match endpoint {
        Endpoint::Unix(path) => {
            execute(UnixConnector::new(path), &tried, cli.verbose, action).await
        }
        Endpoint::Tcp(addr) => {
            execute(
                TcpConnector::new(addr.as_str()),
                &tried,
                cli.verbose,
                action,
            )
            .await
        }
    }
}

/// What `message-cli` tried to reach, for the error when it cannot.
struct Tried {
    endpoint: String,
    /// The default socket passed over on the way, if any.
    skipped: Option<String>,
}

impl Tried {
    /// "cannot connect to the message switch at /var/run/message-switch/sock (No such file
    /// or directory)", plus what was passed over on the way.
    fn explain(&self, error: &std::io::Error) -> anyhow::Error {
        let mut reason = error.to_string();
        if let Some(code) = error.raw_os_error() {
            // The OS error's text without its " (os error N)" suffix, which says nothing more.
            let suffix = format!(" (os error {code})");
            if let Some(text) = reason.strip_suffix(&suffix) {
                reason = text.to_owned();
            }
        }
        match &self.skipped {
            Some(skipped) => anyhow!(
                "cannot connect to the message switch at {} ({reason}; {skipped})",
                self.endpoint
            ),
            None => anyhow!(
                "cannot connect to the message switch at {} ({reason})",
                self.endpoint
            ),
        }
    }
}

async fn execute<C: Connector>(
    connector: C,
    tried: &Tried,
    verbose: bool,
    action: Action,
) -> anyhow::Result<()> {
    let explain = |error: client::Error| match error {
        client::Error::Unreachable(io) => tried.explain(&io),
        other => anyhow::Error::new(other),
    };
    match action {
        Action::Call {
            queue,
            body,
            file,
            timeout,
            no_create,
        } => {
            let body = request_body(body, file)?;
            let client = Client::connect(connector, ClientConfig::default())
                .await
                .map_err(explain)?;
            let options = CallOptions {
                timeout,
                create_queue: !no_create,
            };
            let reply = client
                .call_with(&QueueName::from(queue), body, &options)
                .await
                .map_err(explain)?;
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&reply)?;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
            Ok(())
        }
        Action::Serve {
            queue,
            program,
            concurrency,
        } => serve(connector, queue, program, concurrency)
            .await
            .map_err(explain),
        action => {
            let mut connection = Connection::open(&connector, &Default::default())
                .await
                .map_err(explain)?;
            connection.login(&default_token()).await.map_err(explain)?;
            one_shot(&mut connection, action, verbose)
                .await
                .map_err(explain)
        }
    }
}

/// The commands that are one or a few requests on one connection.
/// The commands that are one or a few requests on one connection; `verbose` prints
/// diagnostics payloads in full.
async fn one_shot(
    connection: &mut Connection,
    action: Action,
    verbose: bool,
) -> Result<(), client::Error> {
    match action {
        Action::List { prefix, all } => {
            let names = connection.list(&QueueName::from(prefix), !all).await?;
            print(&format::list(&names));
        }
        Action::Diagnostics => {
            let diagnostics = connection.diagnostics().await?;
            print(&format::diagnostics(&diagnostics, verbose));
        }
        Action::Tail { follow } => {
            // The original polls `/trace/0/5` even without --follow, which makes a quiet
            // switch take 5 s to print nothing; without --follow we do not wait.
            let wait = if follow {
                Duration::from_secs(5)
            } else {
                Duration::ZERO
            };
            let mut tail = format::Tail::new();
            let mut from = 0;
            loop {
                let events = connection.trace(from, wait).await?;
                print(&tail.rows(&events));
                if !follow {
                    break;
                }
                from = format::next_trace_from(&events, from);
            }
        }
        Action::Mscgen => {
            let events = connection.trace(0, Duration::ZERO).await?;
            print(&format::mscgen(&events));
        }
        Action::Ack { queue, id } => {
            connection
                .ack(&MessageId::new(QueueName::from(queue), id))
                .await?;
        }
        Action::Destroy { queue } => connection.destroy(&QueueName::from(queue)).await?,
        Action::Shutdown => connection.shutdown().await?,
        Action::Call { .. } | Action::Serve { .. } => {
            unreachable!("call and serve are handled by execute")
        }
    }
    Ok(())
}

async fn serve<C: Connector>(
    connector: C,
    queue: String,
    program: Option<String>,
    concurrency: NonZeroUsize,
) -> Result<(), client::Error> {
    let options = ServeOptions {
        concurrency,
        ..ServeOptions::default()
    };
    let queue = QueueName::from(queue);
    match program {
        Some(program) => {
            let program: Arc<str> = program.into();
            let handler = move |incoming: Incoming| run_program(Arc::clone(&program), incoming);
            tokio::select! {
                result = client::serve(connector, queue, options, handler) => result.map(|_| ()),
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        None => {
            let terminal = Arc::new(tokio::sync::Mutex::new(
                BufReader::new(tokio::io::stdin()).lines(),
            ));
            let handler =
                move |incoming: Incoming| ask_the_terminal(Arc::clone(&terminal), incoming);
            tokio::select! {
                result = client::serve(connector, queue, options, handler) => result.map(|_| ()),
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}

/// Runs PROGRAM with the request on its stdin; its stdout is the reply. A failure to run it
/// becomes the reply text (as in the original, where the exception text was sent back), so
/// that the caller is not left waiting.
async fn run_program(program: Arc<str>, incoming: Incoming) -> Bytes {
    match run_program_checked(&program, &incoming.payload).await {
        Ok(output) => output,
        Err(error) => {
            eprintln!("message-cli: {error:#}");
            Bytes::from(format!("{error:#}"))
        }
    }
}

async fn run_program_checked(program: &str, payload: &Bytes) -> anyhow::Result<Bytes> {
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    // Write the request while reading the reply: a program that answers before it has read
    // all its input would otherwise deadlock with us on full pipes.
    let stdin = child.stdin.take();
    let payload = payload.clone();
    let writer = tokio::spawn(async move {
        if let Some(mut stdin) = stdin {
            // A program that does not read its input closes the pipe: not our problem.
            let _ = stdin.write_all(&payload).await;
        }
    });
    let output = child
        .wait_with_output()
        .await
        .with_context(|| format!("cannot run {program}"))?;
    let _ = writer.await;
    if !output.status.success() {
        eprintln!("message-cli: {program} exited with {}", output.status);
    }
    Ok(strip_newline(output.stdout))
}

/// Interactive mode: show the request, read the reply up to a line holding a single ".".
async fn ask_the_terminal(
    terminal: Arc<tokio::sync::Mutex<Lines<BufReader<Stdin>>>>,
    incoming: Incoming,
) -> Bytes {
    let mut lines = terminal.lock().await;
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "Received:");
        let _ = stdout.write_all(&incoming.payload);
        let _ = writeln!(stdout, "\nEnter body text: (end with a \".\")");
        let _ = stdout.flush();
    }
    let mut reply = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line == "." {
            break;
        }
        reply.push(line);
    }
    Bytes::from(reply.join("\n"))
}

/// The body of `call`: --body, --file, or standard input.
fn request_body(body: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Bytes> {
    if let Some(body) = body {
        return Ok(Bytes::from(body));
    }
    let bytes = match file {
        Some(file) => {
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
        }
        None => {
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Enter body text (end with Ctrl-D):");
            }
            let mut bytes = Vec::new();
            stdin
                .read_to_end(&mut bytes)
                .context("cannot read the body from standard input")?;
            bytes
        }
    };
    Ok(strip_newline(bytes))
}

/// Drops one trailing newline: the original read text line by line and joined the lines, so
/// `echo hello` gives `hello`.
fn strip_newline(mut bytes: Vec<u8>) -> Bytes {
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    Bytes::from(bytes)
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. `| head`) is not an error worth reporting.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
