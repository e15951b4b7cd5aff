//! The original's own RPC pairs (`--only original-pairs`): the OCaml message-switch's test
//! client and server (`client_unix_main.exe` / `server_unix_main.exe`, and the Lwt pair),
//! run against our switch and against the OCaml switch, side by side in one run.
//!
//! This is the figure users get: the toolstack's services are these libraries, one call at a
//! time, with the switch asleep between requests; the bench's replica of their pattern
//! (`pattern.rs`) keeps the switch busier and costs it less per exchange. The original is not
//! part of the project (`/work/shared/reference-original.md` says how to build it); the cell
//! is skipped with a message when it is not there.
//!
//! One run: a fresh switch (ours in memory, or the OCaml one with a fresh `--statedir`, which
//! it requires), a fresh OCaml server (`-path SOCK`; the client's final "shutdown" RPC ends
//! it), then the client (`-path SOCK -secs N`), which prints `Finished N RPCs in S`. The
//! switch's CPU time (`/proc/PID/stat`, user and system apart) is read when the client starts
//! and when it prints that line; the client's and the server's CPU at the same moment.
//! Rounds alternate the two switches so that both see the same background load.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::child::{self, ScratchDir};
use crate::{Plan, Storage};

/// The environment variable naming the original's directory when `--original-dir` is not
/// given.
pub const DIR_VARIABLE: &str = "MESSAGE_SWITCH_ORIGINAL_DIR";

/// HTTP exchanges per RPC of the OCaml Unix and Lwt clients: CreatePersistent and Send, the
/// service's Transfer, its response Send and Ack, the caller's Transfer and Ack.
pub const EXCHANGES_PER_RPC: u32 = 7;

/// How long a switch may take to accept connections on its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// Time the OCaml server gets to connect and start listening before the client starts, so
/// that its start-up is not in the measured interval.
const SERVER_SETTLE: Duration = Duration::from_millis(500);

/// How long a client may run past its `-secs`, and a server after the client's shutdown RPC
/// (it exits one second after it), before they are killed.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// One RPC pair of the original.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pair {
    /// `core_test/client_unix_main.exe` and `server_unix_main.exe` (threads, blocking I/O).
    Unix,
    /// `core_test/lwt/client_main.exe` and `server_main.exe`.
    Lwt,
}

impl Pair {
    const ALL: [Pair; 2] = [Pair::Unix, Pair::Lwt];

    /// The names of the client's and the server's executables: the keys of `BUILT`, and
    /// the file names looked for in a directory without it.
    fn executables(self) -> [(&'static str, &'static str); 2] {
        match self {
            Pair::Unix => [
                ("client_unix_main", "client_unix_main.exe"),
                ("server_unix_main", "server_unix_main.exe"),
            ],
            Pair::Lwt => [
                ("lwt_client_main", "lwt/client_main.exe"),
                ("lwt_server_main", "lwt/server_main.exe"),
            ],
        }
    }

    /// The name used in the report.
    pub fn name(self) -> &'static str {
        match self {
            Pair::Unix => "Unix",
            Pair::Lwt => "Lwt",
        }
    }
}

/// Which switch a run measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Switch {
    /// The switch under test (in memory).
    Ours,
    /// The OCaml `switch_main.exe`.
    Original,
}

/// The original's executables that were found.
#[derive(Debug)]
pub struct Original {
    switch: PathBuf,
    /// Client and server of each pair found.
    pairs: Vec<(Pair, PathBuf, PathBuf)>,
}

/// What the cell did: skipped (and why), or its runs.
#[derive(Debug)]
pub enum Outcome {
    /// Not run; the reason is shown in the report.
    Skipped(String),
    /// The runs, in the order they ran.
    Runs(Vec<Run>),
}

/// One client run against one switch.
#[derive(Clone, Debug)]
pub struct Run {
    /// The pair.
    pub pair: Pair,
    /// The switch.
    pub switch: Switch,
    /// The round (runs of one round ran back to back).
    pub round: usize,
    /// RPCs the client reports.
    pub rpcs: u64,
    /// The seconds the client reports for them.
    pub seconds: f64,
    /// The switch's user CPU time over the client's run.
    pub switch_user: Duration,
    /// The switch's system CPU time over the client's run.
    pub switch_system: Duration,
    /// The client's and the server's CPU time over the client's run.
    pub clients: Duration,
}

impl Run {
    /// RPCs per second, as the client reports them.
    pub fn per_second(&self) -> f64 {
        self.rpcs as f64 / self.seconds.max(1e-9)
    }

    /// The switch's CPU (user + system) per RPC.
    pub fn switch_cpu_per_rpc(&self) -> Duration {
        crate::measure::per_operation(self.switch_user + self.switch_system, self.rpcs)
    }

    /// The share of the switch's CPU spent in user space (from the kernel's tick accounting).
    pub fn user_share(&self) -> f64 {
        let total = (self.switch_user + self.switch_system).as_secs_f64();
        if total > 0.0 {
            self.switch_user.as_secs_f64() / total
        } else {
            0.0
        }
    }
}

/// Finds the original's executables in `dir` (`--original-dir`) or, without it, in the
/// directory named by [`DIR_VARIABLE`]. The directory lists them in a `BUILT` file
/// (`name=path` lines, as the reference build writes it) or holds them directly
/// (`switch_main.exe`, `client_unix_main.exe`, `server_unix_main.exe`, `lwt/…`). The error
/// says why the cell cannot run.
pub fn locate(dir: Option<&Path>) -> std::result::Result<Original, String> {
    let dir = match dir {
        Some(dir) => dir.to_owned(),
        None => match std::env::var_os(DIR_VARIABLE) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                return Err(format!(
                    "no original given (--original-dir DIR or {DIR_VARIABLE}=DIR)"
                ))
            }
        },
    };
    if dir.join("FAILED").exists() {
        return Err(format!(
            "the original's build failed ({} exists)",
            dir.join("FAILED").display()
        ));
    }
    let listed = read_built(&dir.join("BUILT"))?;
    let find = |key: &str, file: &str| -> Option<PathBuf> {
        let path = listed
            .as_ref()
            .and_then(|listed| listed.get(key).cloned())
            .unwrap_or_else(|| dir.join(file));
        path.is_file().then_some(path)
    };
    let switch = find("switch_main", "switch_main.exe").ok_or_else(|| {
        format!(
            "no switch_main.exe in {} (nor in its BUILT file)",
            dir.display()
        )
    })?;
    let pairs: Vec<_> = Pair::ALL
        .into_iter()
        .filter_map(|pair| {
            let [(client_key, client_file), (server_key, server_file)] = pair.executables();
            Some((
                pair,
                find(client_key, client_file)?,
                find(server_key, server_file)?,
            ))
        })
        .collect();
    if pairs.is_empty() {
        return Err(format!("no RPC pair of the original in {}", dir.display()));
    }
    Ok(Original { switch, pairs })
}

/// The `name=path` lines of a `BUILT` file, or `None` without one.
fn read_built(path: &Path) -> std::result::Result<Option<BTreeMap<String, PathBuf>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
    };
    let mut listed = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "{}: expected name=path, not {line:?}",
                path.display()
            ));
        };
        listed.insert(name.trim().to_owned(), PathBuf::from(value.trim()));
    }
    Ok(Some(listed))
}

/// Runs every pair found against both switches (our `switch_binary` in memory, with the
/// plan's first thread count), `plan.original_rounds` times, each client for
/// `plan.original_seconds`.
pub async fn run(
    original: &Original,
    switch_binary: &Path,
    plan: &Plan,
    scratch: &ScratchDir,
) -> Result<Vec<Run>> {
    let seconds = plan.original_seconds;
    let mut runs = Vec::new();
    for round in 1..=plan.original_rounds {
        for (pair, client, server) in &original.pairs {
            for switch in [Switch::Ours, Switch::Original] {
                crate::progress(&format!(
                    "original {} pair against the {} switch, round {round}",
                    pair.name(),
                    switch_name(switch)
                ));
                let name = format!("orig-{}-{switch:?}-{round}", pair.name()).to_lowercase();
                let measured = match switch {
                    Switch::Ours => {
                        let ours = crate::start_switch(
                            switch_binary,
                            scratch,
                            &name,
                            Storage::Memory,
                            plan.threads(),
                            plan,
                        )?;
                        let measured =
                            measure_blocking(ours.pid(), &ours.unix, client, server, seconds).await;
                        crate::stop_switch(ours).await?;
                        measured?
                    }
                    Switch::Original => {
                        let (mut ocaml, socket) = start_original(&original.switch, scratch, &name)?;
                        let measured =
                            measure_blocking(ocaml.id(), &socket, client, server, seconds).await;
                        let _ = ocaml.kill();
                        let _ = ocaml.wait();
                        measured?
                    }
                };
                runs.push(Run {
                    pair: *pair,
                    switch,
                    round,
                    ..measured
                });
            }
        }
    }
    Ok(runs)
}

/// How the report names a switch.
pub fn switch_name(switch: Switch) -> &'static str {
    match switch {
        Switch::Ours => "Rust",
        Switch::Original => "OCaml",
    }
}

/// [`measure`] on a blocking thread.
async fn measure_blocking(
    switch_pid: u32,
    socket: &Path,
    client: &Path,
    server: &Path,
    seconds: f64,
) -> Result<Run> {
    let (socket, client, server) = (socket.to_owned(), client.to_owned(), server.to_owned());
    tokio::task::spawn_blocking(move || measure(switch_pid, &socket, &client, &server, seconds))
        .await?
}

/// Starts the OCaml switch on `NAME.sock` with a fresh `NAME.ostate` (it requires a state
/// directory), and waits until its socket accepts connections.
fn start_original(binary: &Path, scratch: &ScratchDir, name: &str) -> Result<(Child, PathBuf)> {
    let socket = scratch.path().join(format!("{name}.sock"));
    let state = scratch.path().join(format!("{name}.ostate"));
    std::fs::create_dir_all(&state)
        .with_context(|| format!("cannot create {}", state.display()))?;
    // It logs to syslog only; without a syslog daemon it prints two lines about that.
    let mut switch = Command::new(binary)
        .arg("--path")
        .arg(&socket)
        .arg("--statedir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    if let Err(error) = wait_for_socket(&socket, &mut switch) {
        let _ = switch.kill();
        let _ = switch.wait();
        return Err(error);
    }
    crate::progress(&format!("OCaml switch {name} started, pid {}", switch.id()));
    Ok((switch, socket))
}

fn wait_for_socket(socket: &Path, switch: &mut Child) -> Result<()> {
    let deadline = Instant::now() + SOCKET_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = switch.try_wait()? {
            bail!("the OCaml switch exited at start ({status})");
        }
        if UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!(
        "the OCaml switch did not listen on {} in time",
        socket.display()
    )
}

/// One run: a fresh OCaml server on `socket`, then the client for `seconds`; the switch's,
/// the client's and the server's CPU over the client's run.
fn measure(
    switch_pid: u32,
    socket: &Path,
    client: &Path,
    server: &Path,
    seconds: f64,
) -> Result<Run> {
    let mut server = Command::new(server)
        .arg("-path")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", server.display()))?;
    let outcome = run_client(switch_pid, server.id(), socket, client, seconds);
    let deadline = Instant::now() + EXIT_GRACE;
    while server.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            eprintln!("the OCaml server did not exit after the client's shutdown; killing it");
            let _ = server.kill();
            let _ = server.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    outcome
}

fn run_client(
    switch_pid: u32,
    server_pid: u32,
    socket: &Path,
    client: &Path,
    seconds: f64,
) -> Result<Run> {
    std::thread::sleep(SERVER_SETTLE);
    let switch_before = child::cpu_split(switch_pid)?;
    let server_before = child::cpu_time(server_pid)?;
    let mut client = Command::new(client)
        .arg("-path")
        .arg(socket)
        .arg("-secs")
        .arg(format!("{seconds}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", client.display()))?;
    let client_pid = client.id();
    let stdout = client.stdout.take().context("no stdout pipe")?;
    let mut finished = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(counts) = parse_finished(&line) {
            // Read at once: the client and server are still alive (the shutdown RPC follows).
            let switch_after = child::cpu_split(switch_pid)?;
            let clients = child::cpu_time(client_pid)?
                + child::cpu_time(server_pid)?.saturating_sub(server_before);
            finished = Some((counts, switch_after, clients));
            break;
        }
    }
    let deadline = Instant::now() + EXIT_GRACE;
    while client.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            let _ = client.kill();
            let _ = client.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(((rpcs, seconds), switch_after, clients)) = finished else {
        bail!("the OCaml client ended without printing `Finished N RPCs in S`");
    };
    Ok(Run {
        pair: Pair::Unix,
        switch: Switch::Ours,
        round: 0,
        rpcs,
        seconds,
        switch_user: switch_after.0.saturating_sub(switch_before.0),
        switch_system: switch_after.1.saturating_sub(switch_before.1),
        clients,
    })
}

/// Our switch's CPU per RPC ÷ the OCaml switch's that issue 20 asks for, with the original's
/// Unix pair.
pub const CPU_RATIO_TARGET: f64 = 0.35;

/// The figures of one pair and one switch over all rounds.
struct Totals {
    rpcs: u64,
    seconds: f64,
    cpu: Duration,
    user: Duration,
}

fn totals(runs: &[Run], pair: Pair, switch: Switch) -> Option<Totals> {
    let mine: Vec<&Run> = runs
        .iter()
        .filter(|r| r.pair == pair && r.switch == switch)
        .collect();
    if mine.is_empty() {
        return None;
    }
    Some(Totals {
        rpcs: mine.iter().map(|r| r.rpcs).sum(),
        seconds: mine.iter().map(|r| r.seconds).sum(),
        cpu: mine.iter().map(|r| r.switch_user + r.switch_system).sum(),
        user: mine.iter().map(|r| r.switch_user).sum(),
    })
}

impl Totals {
    fn cpu_per_rpc(&self) -> Duration {
        crate::measure::per_operation(self.cpu, self.rpcs)
    }
}

/// Our switch's CPU per RPC ÷ the OCaml switch's with `pair`, over all rounds.
pub fn cpu_ratio(runs: &[Run], pair: Pair) -> Option<f64> {
    let ours = totals(runs, pair, Switch::Ours)?;
    let original = totals(runs, pair, Switch::Original)?;
    let base = original.cpu_per_rpc().as_secs_f64();
    (base > 0.0).then(|| ours.cpu_per_rpc().as_secs_f64() / base)
}

/// The cell's tables (Markdown), or the reason it was skipped.
pub fn render(out: &mut String, outcome: &Outcome) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "## The original's RPC pairs: our switch against the OCaml switch\n"
    );
    let runs = match outcome {
        Outcome::Skipped(reason) => {
            let _ = writeln!(out, "Skipped: {reason}.\n");
            return;
        }
        Outcome::Runs(runs) => runs,
    };
    let _ = writeln!(
        out,
        "The OCaml message-switch's own test client and server (one call at a time, \
         {EXCHANGES_PER_RPC} HTTP exchanges per RPC), each run with a fresh server, against our \
         switch (in memory) and the OCaml switch (`--statedir`, which it requires; it does \
         not sync), rounds alternating. CPU from /proc/PID/stat (10 ms ticks) from the \
         client's start to its `Finished` line; \"user\" is the user-space share of it; \
         \"clients\" is the OCaml client's and server's CPU per RPC.\n"
    );
    let _ = writeln!(
        out,
        "| pair | switch | round | RPCs | RPC/s | switch CPU µs/RPC | µs/exchange | user | \
         clients CPU µs/RPC |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let cpu = run.switch_cpu_per_rpc().as_secs_f64() * 1e6;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {cpu:.1} | {:.1} | {:.0} % | {:.1} |",
            run.pair.name(),
            switch_name(run.switch),
            run.round,
            run.rpcs,
            run.per_second(),
            cpu / f64::from(EXCHANGES_PER_RPC),
            run.user_share() * 100.0,
            crate::measure::per_operation(run.clients, run.rpcs).as_secs_f64() * 1e6,
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| pair | Rust CPU µs/RPC | OCaml CPU µs/RPC | CPU ÷ OCaml | Rust RPC/s | OCaml RPC/s | \
         RPC/s ÷ OCaml | user share Rust / OCaml |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for pair in Pair::ALL {
        let (Some(ours), Some(original)) = (
            totals(runs, pair, Switch::Ours),
            totals(runs, pair, Switch::Original),
        ) else {
            continue;
        };
        let share = |t: &Totals| {
            if t.cpu.is_zero() {
                0.0
            } else {
                100.0 * t.user.as_secs_f64() / t.cpu.as_secs_f64()
            }
        };
        let rate = |t: &Totals| t.rpcs as f64 / t.seconds.max(1e-9);
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {} | {:.0} | {:.0} | {:.2} | {:.0} % / {:.0} % |",
            pair.name(),
            ours.cpu_per_rpc().as_secs_f64() * 1e6,
            original.cpu_per_rpc().as_secs_f64() * 1e6,
            cpu_ratio(runs, pair).map_or("–".into(), |r| format!("{r:.2}")),
            rate(&ours),
            rate(&original),
            rate(&ours) / rate(&original).max(1e-9),
            share(&ours),
            share(&original),
        );
    }
    out.push('\n');
}

/// `Finished N RPCs in S` → (N, S).
fn parse_finished(line: &str) -> Option<(u64, f64)> {
    let rest = line.trim().strip_prefix("Finished ")?;
    let (count, rest) = rest.split_once(" RPCs in ")?;
    Some((count.parse().ok()?, rest.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_last_line_is_parsed() {
        assert_eq!(
            parse_finished("Finished 1229 RPCs in 3.00"),
            Some((1229, 3.0))
        );
        assert_eq!(parse_finished("Finished RPCs in 3.00"), None);
        assert_eq!(parse_finished("hello"), None);
    }

    #[test]
    fn a_missing_or_failed_original_is_a_reason_to_skip() {
        let dir = std::env::temp_dir().join(format!("bench-original-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let reason = locate(Some(&dir)).unwrap_err();
        assert!(reason.contains("no switch_main.exe"), "{reason}");
        std::fs::write(dir.join("FAILED"), "").unwrap();
        let reason = locate(Some(&dir)).unwrap_err();
        assert!(reason.contains("build failed"), "{reason}");
        std::fs::remove_file(dir.join("FAILED")).unwrap();
        std::fs::write(dir.join("BUILT"), "switch_main\n").unwrap();
        let reason = locate(Some(&dir)).unwrap_err();
        assert!(reason.contains("expected name=path"), "{reason}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
