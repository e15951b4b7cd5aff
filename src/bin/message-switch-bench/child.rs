//! The processes under test: the switch and the echo server run as children of the bench, each
//! with its own runtime, so that `/proc/PID/stat` gives exactly their CPU time and
//! `/proc/PID/status` their memory, apart from the load generator's.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// How long a child may take to print both of its `listening on` lines.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a switch may take to exit after `POST /shutdown` before it is killed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running child process and the addresses it listens on. Dropping it kills the process.
pub struct ChildProcess {
    name: String,
    child: Child,
    /// Its loopback TCP address (from its `listening on tcp ADDR` line).
    pub tcp: SocketAddr,
    /// Its Unix socket (from its `listening on unix PATH` line).
    pub unix: PathBuf,
}

impl ChildProcess {
    /// Starts `command` and waits until it has printed `listening on tcp ADDR` and
    /// `listening on unix PATH` on stderr (the switch's start-up lines, which the echo server
    /// imitates). Later stderr lines are forwarded to ours, prefixed with `name`.
    pub fn spawn(name: &str, mut command: Command) -> Result<ChildProcess> {
        // The echo server exits when its stdin closes, so it cannot outlive a killed bench.
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (lines, listening) = mpsc::channel();
        let prefix = name.to_owned();
        std::thread::spawn(move || forward_stderr(stderr, &prefix, &lines));
        let mut tcp = None;
        let mut unix = None;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while tcp.is_none() || unix.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match listening.recv_timeout(left) {
                Ok(Listening::Tcp(address)) => tcp = Some(address),
                Ok(Listening::Unix(path)) => unix = Some(path),
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait()?;
                    bail!("{name} did not start listening ({status})");
                }
            }
        }
        Ok(ChildProcess {
            name: name.to_owned(),
            child,
            tcp: tcp.context("no tcp address")?,
            unix: unix.context("no unix path")?,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's resident set size in bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        rss_bytes(self.pid())
    }

    /// Waits up to [`EXIT_TIMEOUT`] for the child to exit on its own (after a shutdown
    /// request), then kills it. Returns whether it exited by itself.
    pub fn wait_or_kill(mut self) -> Result<bool> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{}: did not exit after shutdown; killing it", self.name);
        self.child.kill()?;
        self.child.wait()?;
        Ok(false)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time (user + system, all threads, including exited ones) of process `pid`, from
/// fields 14 and 15 of `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// [`cpu_time`]'s user and system parts (fields 14 and 15 of `/proc/PID/stat`), apart.
pub fn cpu_split(pid: u32) -> Result<(Duration, Duration)> {
    let dir = format!("/proc/{pid}");
    let stat = std::fs::read_to_string(format!("{dir}/stat"))
        .with_context(|| format!("cannot read {dir}/stat"))?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after
    // its closing parenthesis, where field 3 (the state) is the first.
    let rest = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .ok_or_else(|| anyhow!("malformed {dir}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| -> Result<Duration> {
        let ticks: u64 = fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| anyhow!("malformed {dir}/stat"))?;
        let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(clock_ticks_per_second());
        Ok(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    };
    Ok((ticks(14 - 3)?, ticks(15 - 3)?))
}

/// CPU time of the calling thread alone, in ns from `/proc/thread-self/schedstat` (its
/// first field, time spent running): `stat`'s clock ticks (10 ms) are too coarse for a probe
/// of a few hundred syscalls.
pub fn thread_cpu_time() -> Result<Duration> {
    let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("cannot read /proc/thread-self/schedstat")?;
    let nanos = schedstat
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .ok_or_else(|| anyhow!("malformed /proc/thread-self/schedstat"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Resident set size of process `pid` in bytes, from `VmRSS` in `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// The soft limit on open files of this process (children inherit it), from
/// `/proc/self/limits`.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The load average over the last minute: the machine is shared, so the report records it.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// A scratch directory for sockets and state directories, removed when dropped.
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh directory under the system temp directory.
    pub fn new() -> Result<ScratchDir> {
        let path =
            std::env::temp_dir().join(format!("message-switch-bench.{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Listening {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

fn forward_stderr(stderr: impl std::io::Read, name: &str, listening: &mpsc::Sender<Listening>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { return };
        if let Some(address) = line.strip_prefix("listening on tcp ") {
            if let Ok(address) = address.trim().parse() {
                let _ = listening.send(Listening::Tcp(address));
                continue;
            }
        }
        if let Some(path) = line.strip_prefix("listening on unix ") {
            let _ = listening.send(Listening::Unix(PathBuf::from(path.trim())));
            continue;
        }
        eprintln!("[{name}] {line}");
    }
}

/// `CLK_TCK`, the unit of `/proc/PID/stat` times: asked of `getconf` once, since reading it
/// directly (`sysconf`) would need `unsafe`. Linux reports 100 on every common platform.
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks| *ticks > 0)
            .unwrap_or(100)
    })
}
