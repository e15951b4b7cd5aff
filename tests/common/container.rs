//! A Debian root with a real systemd as PID 1, booted in a `systemd-nspawn` container, for
//! the tests that run the packages as a host would (tests/host_systemd.rs).
//!
//! What works on these machines (Debian, root, no systemd of their own): the root is made by
//! `debootstrap` from the machine's own Debian mirror and cached under `target/host-root/`,
//! keyed by its package list; each test boots a copy of it with `systemd-nspawn --boot
//! --keep-unit --register=no` (without those two options nspawn wants the host's systemd
//! and fails with "Failed to open system bus"). Unregistered, the container has no
//! `machinectl`, and `systemctl --machine`/`systemd-run --machine` need machined, which the
//! host lacks. The host's `systemctl` pointed at the container's D-Bus
//! (`SYSTEMCTL_FORCE_BUS=1 DBUS_SYSTEM_BUS_ADDRESS=unix:path=/proc/PID/root/run/dbus/...`)
//! refuses with "System has not been booted with systemd as init system (PID 1)", and
//! `busctl --address` to its `/run/systemd/private` fails with "Transport endpoint is not
//! connected". What works: commands run inside it through `nsenter --all` into its init
//! (the container's own `systemctl` and `journalctl`), its files and Unix sockets are
//! reached from the host through `/proc/PID/root/`, and a bind-mounted directory carries
//! results out of units. nspawn's own notifications (`--notify-ready=yes`) name that init
//! (`X_NSPAWN_LEADER_PID=`) and say when its boot has finished.
//!
//! The container is always torn down: dropping [`Container`] kills its init (which ends every
//! process of the container) and waits for nspawn, also when the test panics; if the test
//! process itself dies, nspawn gets SIGTERM (`setpriv --pdeathsig`) and powers the
//! container off.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long booting, or any condition a test waits for inside the container, may take.
pub const CONTAINER_DEADLINE: Duration = Duration::from_secs(60);

/// The cache of roots and the copies booted from them.
fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/host-root")
}

/// A minimal Debian root (`debootstrap --variant=minbase`) of this machine's release with
/// `packages` added, built once and kept in `target/host-root/RELEASE-minbase-PACKAGES/`.
/// The directory appears only when debootstrap has succeeded (it is built under another
/// name and renamed), so a root found there is complete.
pub fn debian_root(packages: &[&str]) -> PathBuf {
    let release = os_release_field("VERSION_CODENAME");
    let mut sorted = packages.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let cache = cache_dir();
    let root = cache.join(format!("{release}-minbase-{}", sorted.join("+")));
    if root.is_dir() {
        return root;
    }
    let mirror = debian_mirror(&release);
    let partial = cache.join(format!("{release}-minbase-{}.partial", sorted.join("+")));
    match std::fs::remove_dir_all(&partial) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => panic!("cannot remove {}: {error}", partial.display()),
    }
    std::fs::create_dir_all(&cache).expect("target/host-root");
    eprintln!(
        "== building the Debian root {} with debootstrap from {mirror} (once; about a minute)",
        root.display()
    );
    let output = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", sorted.join(",")))
        .arg(&release)
        .arg(&partial)
        .arg(&mirror)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run debootstrap (apt-get install debootstrap): {error}")
        });
    assert!(
        output.status.success(),
        "debootstrap {release} from {mirror} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        tail(&String::from_utf8_lossy(&output.stdout), 30)
    );
    std::fs::rename(&partial, &root).expect("rename the finished root");
    root
}

/// A field of /etc/os-release, e.g. `VERSION_CODENAME`.
fn os_release_field(name: &str) -> String {
    let text = std::fs::read_to_string("/etc/os-release").expect("/etc/os-release");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
        .map(|value| value.trim_matches('"').to_owned())
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| panic!("/etc/os-release has no {name}: this needs a Debian machine"))
}

/// The mirror this machine's apt sources use for `release` (no other host is reachable).
fn debian_mirror(release: &str) -> String {
    let output = Command::new("apt-get")
        .args([
            "indextargets",
            "--format",
            "$(RELEASE) $(REPO_URI)",
            "Created-By: Packages",
        ])
        .output()
        .expect("apt-get runs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| {
            let (suite, uri) = line.split_once(' ')?;
            (suite == release).then(|| uri.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no Debian mirror for {release} in the apt sources:\n{text}"))
}

/// A host directory mounted into the container.
pub struct Bind {
    host: PathBuf,
    container: String,
    read_only: bool,
}

impl Bind {
    /// `host` at `container`, read-only.
    pub fn read_only(host: &Path, container: &str) -> Bind {
        Bind {
            host: host.to_owned(),
            container: container.to_owned(),
            read_only: true,
        }
    }

    /// `host` at `container`, writable from both sides.
    pub fn writable(host: &Path, container: &str) -> Bind {
        Bind {
            read_only: false,
            ..Bind::read_only(host, container)
        }
    }

    fn option(&self) -> String {
        let kind = if self.read_only {
            "--bind-ro"
        } else {
            "--bind"
        };
        format!("{kind}={}:{}", self.host.display(), self.container)
    }
}

/// A file put into the container's root before it boots.
pub struct RootFile<'a> {
    /// Its absolute path in the container.
    pub path: &'a str,
    /// Its contents.
    pub contents: &'a str,
    /// Its permission bits.
    pub mode: u32,
}

/// A booted container running systemd as PID 1 on a copy of a root. Torn down when dropped.
/// Boot it on the thread that uses it: nspawn's parent-death signal follows the thread that
/// started it, not the process.
pub struct Container {
    nspawn: Child,
    /// The container's init (its PID 1), as a host pid.
    leader: u32,
    console: PathBuf,
    run: tempfile::TempDir,
}

impl Container {
    /// Copies `root`, adds `files`, and boots it with `binds`, waiting (bounded) until its
    /// systemd reports that the boot has finished.
    pub fn boot(root: &Path, files: &[RootFile], binds: &[Bind]) -> Container {
        let runs = cache_dir().join("runs");
        // Copies left by a run that was killed (this worktree runs one such test at a time).
        let _ = std::fs::remove_dir_all(&runs);
        std::fs::create_dir_all(&runs).expect("target/host-root/runs");
        let run = tempfile::Builder::new()
            .prefix("switch-host-")
            .tempdir_in(&runs)
            .expect("a run directory");
        let copy = run.path().join("root");
        let copied = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(root)
            .arg(&copy)
            .status()
            .expect("cp runs");
        assert!(copied.success(), "cannot copy {}", root.display());
        for file in files {
            let path = copy.join(file.path.trim_start_matches('/'));
            std::fs::create_dir_all(path.parent().expect("a directory")).expect("mkdir");
            std::fs::write(&path, file.contents).expect("write a file into the root");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
                .expect("chmod");
        }
        // nspawn tells its NOTIFY_SOCKET the container's init (X_NSPAWN_LEADER_PID=) and,
        // with --notify-ready=yes, READY=1 once that init has finished booting.
        let notify_dir = tempfile::tempdir().expect("a directory for the notify socket");
        let notify_path = notify_dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).expect("bind nspawn's notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("read timeout");
        let console = run.path().join("console.log");
        let log = std::fs::File::create(&console).expect("the console log");
        let name = run
            .path()
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .to_lowercase();
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "TERM", "--", "systemd-nspawn"])
            .arg("--directory")
            .arg(&copy)
            .arg(format!("--machine={name}"))
            .args([
                "--boot",
                "--keep-unit",
                "--register=no",
                "--notify-ready=yes",
                "--console=read-only",
            ])
            .args(binds.iter().map(Bind::option))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let nspawn = command.spawn().unwrap_or_else(|error| {
            panic!("cannot run systemd-nspawn (apt-get install systemd-container): {error}")
        });
        let mut container = Container {
            nspawn,
            leader: 0,
            console,
            run,
        };
        let deadline = Instant::now() + CONTAINER_DEADLINE;
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(status) = container.nspawn.try_wait().expect("try_wait") {
                panic!(
                    "systemd-nspawn exited ({status}) before the boot finished:\n{}",
                    container.console_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the container did not finish booting within {CONTAINER_DEADLINE:?}:\n{}",
                container.console_tail()
            );
            let Ok(length) = notify.recv(&mut buffer) else {
                continue;
            };
            let message = String::from_utf8_lossy(&buffer[..length]).into_owned();
            for line in message.lines() {
                if let Some(pid) = line.strip_prefix("X_NSPAWN_LEADER_PID=") {
                    container.leader = pid.trim().parse().expect("a pid");
                }
            }
            if message.lines().any(|line| line == "READY=1") {
                assert_ne!(container.leader, 0, "nspawn named no leader before READY=1");
                return container;
            }
        }
    }

    /// `program` to run inside the container (all its namespaces, its root), with a plain
    /// environment; nothing in it is a terminal, so systemctl and journalctl page nothing.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["--target", &self.leader.to_string(), "--all", "--"])
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null());
        command
    }

    /// Runs `args` inside the container and returns what it did, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args[0])
            .args(&args[1..])
            .output()
            .expect("nsenter runs")
    }

    /// Runs `args` inside the container and returns its stdout, failing the test (with its
    /// stderr and the journal) unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        if !output.status.success() {
            self.fail(&format!(
                "{args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs a `sh -c` script inside the container; see [`Container::ok`].
    pub fn sh(&self, script: &str) -> String {
        self.ok(&["sh", "-c", script])
    }

    /// One property of a unit (`systemctl show -p NAME --value UNIT`).
    pub fn unit_property(&self, unit: &str, name: &str) -> String {
        self.ok(&["systemctl", "show", "-p", name, "--value", unit])
            .trim()
            .to_owned()
    }

    /// Polls `check` every 100 ms until it returns `Some`, failing the test with the journal
    /// after [`CONTAINER_DEADLINE`].
    pub fn wait_until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + CONTAINER_DEADLINE;
        loop {
            if let Some(value) = check() {
                return value;
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "timed out after {CONTAINER_DEADLINE:?} waiting until {what}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails the test with `message` and the end of the container's journal.
    pub fn fail(&self, message: &str) -> ! {
        panic!(
            "{message}\n--- the container's journal, last lines:\n{}",
            self.journal_tail()
        )
    }

    /// The last lines of the container's journal (every unit), with monotonic times.
    pub fn journal_tail(&self) -> String {
        let output = self.run(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-monotonic",
            "-n",
            "60",
        ]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// A path inside the container as the host reaches it (through its init's root), e.g.
    /// to connect to a Unix socket bound in the container.
    pub fn host_path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.leader)).join(path.trim_start_matches('/'))
    }

    fn console_tail(&self) -> String {
        tail(
            &std::fs::read_to_string(&self.console).unwrap_or_default(),
            40,
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // SIGKILL to a PID namespace's init ends every process in it; nspawn, its parent,
        // then exits. Killing only nspawn would leave the container's systemd running.
        if self.leader != 0 {
            let _ = Command::new("kill")
                .args(["-KILL", &self.leader.to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        // The copy of the root is removed with `self.run`, after this.
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
