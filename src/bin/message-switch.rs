//! `message-switch`: the broker. With no flags it serves HTTP/1.1 on TCP 127.0.0.1:8080;
//! `--path` adds (or, alone, replaces it with) a Unix socket, as the original does.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use message_switch::cli::switch::Args;
use message_switch::server::{bind_unix, Config, Switch};

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = args.config().map_err(anyhow::Error::msg)?;
    runtime(args.threads)?.block_on(run(args, config))
}

/// A current-thread runtime for one thread (no wake-ups cross threads), else a
/// multi-threaded one with `threads` workers.
fn runtime(threads: u16) -> Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(usize::from(threads));
        builder
    };
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn run(args: Args, config: Config) -> Result<()> {
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
    let mut tcp = args.listen.clone();
    if tcp.is_empty() && args.path.is_none() {
        tcp.push(SocketAddr::from(([127, 0, 0, 1], 8080)));
    }
    for address in tcp {
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        eprintln!("listening on tcp {}", listener.local_addr()?);
        switch.serve(listener);
    }
    if let Some(path) = &args.path {
        let listener = bind_unix(path, args.socket_mode)
            .await
            .with_context(|| format!("cannot listen on {}", path.display()))?;
        eprintln!("listening on unix {}", path.display());
        switch.serve(listener);
    }
    if let Some(pidfile) = &args.pidfile {
        std::fs::write(pidfile, std::process::id().to_string())
            .with_context(|| format!("cannot write the pid file {}", pidfile.display()))?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    tokio::select! {
        _ = switch.stopped() => {}
        _ = terminate.recv() => switch.shutdown(),
        _ = tokio::signal::ctrl_c() => switch.shutdown(),
    }
    switch.stopped().await;
    let journal = switch.close_journal().await;
    if let Some(path) = &args.path {
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
