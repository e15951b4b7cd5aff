//! `message-switch`: the broker. With no flags it serves HTTP/1.1 on TCP 127.0.0.1:8080;
//! `--path` adds (or, alone, replaces it with) a Unix socket, as the original does.
//! `--config FILE` reads the options from the original's config file; under systemd it
//! reports readiness and serves the sockets systemd passes (`message_switch::systemd`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::{TcpListener, UnixListener};

use message_switch::cli::switch::Args;
use message_switch::server::{bind_tcp, bind_unix, runtime, Config, Switch};
use message_switch::systemd::activation::{self, Passed};
use message_switch::systemd::notify::{self, Notifier, Readiness};

/// How often the status line for `systemctl status` is refreshed (sent only when changed).
const STATUS_EVERY: Duration = Duration::from_secs(2);

fn main() -> ExitCode {
    message_switch::logs::init("info", true);
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "{}message-switch: {error:#}",
                message_switch::logs::error_line_prefix()
            );
            ExitCode::FAILURE
        }
    }
}

/// Everything that can fail before a listener or the state is opened is checked here first:
/// the command line, the config file, the passed sockets and the notify socket.
fn start() -> Result<()> {
    let args = Args::from_argv(std::env::args_os().collect())?;
    let config = args.config().map_err(anyhow::Error::msg)?;
    let passed = activation::passed_listeners()?;
    let readiness = Readiness::new(
        Notifier::from_env().context("cannot use the service manager's NOTIFY_SOCKET")?,
    );
    runtime(args.threads)
        .context("cannot start the async runtime")?
        .block_on(run(args, config, passed, readiness))
}

async fn run(args: Args, config: Config, passed: Vec<Passed>, readiness: Readiness) -> Result<()> {
    // Handle the signals before anything is announced: a SIGTERM sent as soon as the
    // listeners are reported must stop the switch gracefully, not kill it.
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let switch = match &args.statedir {
        Some(dir) => {
            let (switch, report) = Switch::open_dir(config, dir)
                .await
                .with_context(|| format!("cannot open the state directory {}", dir.display()))?;
            eprintln!(
                "recovered {} queues and {} messages from {}",
                report.queues,
                report.messages,
                dir.display()
            );
            switch
        }
        None => Switch::start(config),
    };
    let bound_path = listen(&switch, &args, passed).await?;
    if let Some(pidfile) = &args.pidfile {
        std::fs::write(pidfile, std::process::id().to_string())
            .with_context(|| format!("cannot write the pid file {}", pidfile.display()))?;
    }
    // Every listener is listening (connections queue in its backlog from now on) and
    // recovery is over: the service is ready.
    readiness.ready(&notify::status_line(&switch).await);
    tokio::select! {
        _ = switch.stopping() => {}
        _ = notify::report_status(switch.clone(), &readiness, STATUS_EVERY) => {}
        _ = terminate.recv() => switch.shutdown(),
        _ = interrupt.recv() => switch.shutdown(),
    }
    switch.stopping().await;
    readiness.stopping();
    switch.stopped().await;
    let journal = switch.close_journal().await;
    if let Some(path) = bound_path {
        let _ = std::fs::remove_file(path);
    }
    if let Some(pidfile) = &args.pidfile {
        let _ = std::fs::remove_file(pidfile);
    }
    if let Err(error) = journal {
        bail!("stopped, but the journal is not fully durable: {error}");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Serves the passed sockets, then binds what the options ask for and was not passed
/// ([`activation::still_to_bind`]). With no listener asked for and none passed, TCP
/// 127.0.0.1:8080. Returns the Unix socket path this process bound (its file is removed on
/// exit; a passed one belongs to systemd).
async fn listen<'a>(
    switch: &Switch,
    args: &'a Args,
    passed: Vec<Passed>,
) -> Result<Option<&'a Path>> {
    let mut wanted = args.listen.clone();
    if wanted.is_empty() && args.path.is_none() && passed.is_empty() {
        wanted.push(SocketAddr::from(([127, 0, 0, 1], 8080)));
    }
    let (tcp, path) = activation::still_to_bind(&passed, &wanted, args.path.as_deref());
    for socket in passed {
        serve_passed(switch, socket)?;
    }
    for address in tcp {
        let listener = bind_tcp(address).with_context(|| format!("cannot listen on {address}"))?;
        eprintln!("listening on tcp {}", listener.local_addr()?);
        switch.serve(listener);
    }
    if let Some(path) = path {
        let listener = bind_unix(path, args.socket_mode)
            .await
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        eprintln!("listening on unix {}", path.display());
        switch.serve(listener);
    }
    Ok(path)
}

/// Serves one socket passed by the service manager, and says so on stderr.
fn serve_passed(switch: &Switch, socket: Passed) -> Result<()> {
    match socket {
        Passed::Unix { listener, name } => {
            let address = listener.local_addr().context("a passed Unix socket")?;
            listener.set_nonblocking(true)?;
            switch.serve(UnixListener::from_std(listener)?);
            let name = name.as_deref().unwrap_or("unnamed");
            match address.as_pathname() {
                Some(path) => eprintln!("listening on unix {} (passed as {name})", path.display()),
                None => eprintln!("listening on an unnamed unix socket (passed as {name})"),
            }
        }
        Passed::Tcp { listener, name } => {
            let address = listener.local_addr().context("a passed TCP socket")?;
            listener.set_nonblocking(true)?;
            switch.serve(TcpListener::from_std(listener)?);
            let name = name.as_deref().unwrap_or("unnamed");
            eprintln!("listening on tcp {address} (passed as {name})");
        }
    }
    Ok(())
}
