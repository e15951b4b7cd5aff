//! The Debian package under a real systemd as PID 1: a container booted from Debian's own
//! packages (tests/common/container.rs), the `.deb` of `packaging/build-packages.sh`
//! installed in it with dpkg, and the units checked with `systemctl` and `journalctl`:
//!
//! - installing starts `message-switch.socket` and `message-switch.service`, and `systemctl
//!   status` shows the switch's `STATUS=` line;
//! - the service is `active` only after the switch's `READY=1`, and a unit ordered
//!   `After=message-switch.service` starts only then, and finds the switch answering: both
//!   with the socket unit (systemd holds the socket) and without it (the switch binds it);
//! - a client that connects while `systemctl restart message-switch` is under way waits in
//!   the socket's backlog and gets its answer from the new switch;
//! - `systemctl stop` ends the switch with exit status 0 (`Result=success`), a bad config
//!   file makes it fail with an error entry saying why, and every line the switch logs is
//!   plain text at the priority of its level (`journalctl -o json`).
//!
//! To hold the switch before it is ready for as long as the test needs, without timing, the
//! test replaces `/etc/message-switch.conf` by a FIFO: a switch that starts blocks reading
//! its config (before it listens or tells systemd anything) until the test writes the real
//! file into the FIFO.
//!
//! Ignored in the plain `cargo test` (it needs root, `debootstrap`, `systemd-nspawn` and
//! the packages' release build); `.ci/run` runs it:
//!
//! ```sh
//! cargo test --test host_systemd -- --ignored
//! ```

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::container::{debian_root, Bind, Container, RootFile, CONTAINER_DEADLINE};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What the root holds beyond debootstrap's minbase: systemd as init, and D-Bus, which
/// `systemctl` uses for some requests.
const ROOT_PACKAGES: &[&str] = &["systemd", "systemd-sysv", "dbus"];

const SERVICE: &str = "message-switch.service";
const SOCKET: &str = "message-switch.socket";
/// The switch's socket, as the toolstack names it (/var/run links to /run).
const SOCKET_PATH: &str = "/var/run/message-switch/sock";
const CONFIG: &str = "/etc/message-switch.conf";

/// The probe unit put into the root: a unit ordered after the switch, which records what
/// it finds at its start in the bind-mounted results directory.
const PROBE: &str = "switch-probe.service";
const PROBE_UNIT: &str = "\
[Unit]
Description=Test probe: does the switch answer when a unit ordered after it starts?
Wants=message-switch.service
After=message-switch.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/switch-probe
";
const PROBE_SCRIPT: &str = r#"#!/bin/sh
# What a unit ordered After=message-switch.service finds when it starts (tests/host_systemd.rs):
# the switch's state, and whether a client connecting now is answered.
set -u
state=$(systemctl show -p ActiveState --value message-switch.service)
if answer=$(timeout 10 message-cli --path /var/run/message-switch/sock diagnostics 2>&1); then
    connect=answered
else
    connect="failed: $answer"
fi
printf 'switch %s\nconnect %s\n' "$state" "$connect" > /results/probe.tmp
mv /results/probe.tmp /results/probe
"#;

#[test]
#[ignore = "slow, needs root: boots systemd in a container (cargo test --test host_systemd -- --ignored; .ci/run)"]
fn the_package_works_under_a_real_systemd() {
    let deb = build_deb();
    let root = debian_root(ROOT_PACKAGES);
    let results = tempfile::tempdir().expect("the results directory");
    let host = Container::boot(
        &root,
        &[
            RootFile {
                path: "/etc/systemd/system/switch-probe.service",
                contents: PROBE_UNIT,
                mode: 0o644,
            },
            RootFile {
                path: "/usr/local/sbin/switch-probe",
                contents: PROBE_SCRIPT,
                mode: 0o755,
            },
        ],
        &[
            Bind::read_only(deb.parent().expect("a directory"), "/packages"),
            Bind::writable(results.path(), "/results"),
        ],
    );
    let deb_name = deb.file_name().expect("a name").to_string_lossy();
    installing_starts_the_socket_and_the_service(&host, &deb_name);
    units_ordered_after_start_once_it_answers(&host, results.path(), Activation::Socket);
    units_ordered_after_start_once_it_answers(&host, results.path(), Activation::SelfBound);
    a_client_connecting_during_a_restart_gets_its_answer(&host);
    stop_ends_it_with_exit_status_0(&host);
    a_bad_config_fails_the_start_with_an_error_entry(&host);
    the_journal_has_plain_lines_at_their_levels_priorities(&host);
}

/// The `.deb` of this version, built by packaging/build-packages.sh (incremental after the
/// packaging test).
fn build_deb() -> PathBuf {
    let script = Path::new(REPO).join("packaging/build-packages.sh");
    let output = Command::new(&script)
        .arg("deb")
        .output()
        .expect("packaging/build-packages.sh runs");
    assert!(
        output.status.success(),
        "packaging/build-packages.sh deb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let name = format!("message-switch-rs_{}-1_", env!("CARGO_PKG_VERSION"));
    let packages = Path::new(REPO).join("target/packages");
    let found: Vec<PathBuf> = std::fs::read_dir(&packages)
        .expect("target/packages")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| {
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            file.starts_with(&name) && file.ends_with(".deb")
        })
        .collect();
    assert_eq!(found.len(), 1, "one {name}*.deb: {found:?}");
    found.into_iter().next().expect("checked above")
}

/// dpkg's postinst enables and starts both units (`systemctl start` returns once the switch
/// is ready), the switch answers, and `systemctl status` shows its status line.
fn installing_starts_the_socket_and_the_service(host: &Container, deb_name: &str) {
    host.ok(&["dpkg", "-i", &format!("/packages/{deb_name}")]);
    for unit in [SOCKET, SERVICE] {
        assert_eq!(
            host.unit_property(unit, "ActiveState"),
            "active",
            "{unit} after installing"
        );
        assert_eq!(
            host.unit_property(unit, "UnitFileState"),
            "enabled",
            "{unit}"
        );
    }
    let diagnostics = host.ok(&["message-cli", "--path", SOCKET_PATH, "diagnostics"]);
    assert!(diagnostics.contains("Switch started"), "{diagnostics}");
    // `systemctl status` exits 0 for an active unit; the STATUS= line is shown as Status:.
    let status = host.ok(&["systemctl", "status", "--no-pager", SERVICE]);
    assert!(
        status.contains("Status: \"queues: 0, messages: 0, connections: "),
        "the switch's STATUS= line in systemctl status:\n{status}"
    );
    assert!(
        status.contains("TriggeredBy: ● message-switch.socket"),
        "{status}"
    );
}

/// How the switch gets its socket in a test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Activation {
    /// message-switch.socket holds it (the packaged setup).
    Socket,
    /// The socket unit is masked: the switch binds the path of its config file itself, as
    /// the original does, so nobody can connect before it listens.
    SelfBound,
}

/// /etc/message-switch.conf replaced by a FIFO, which holds a switch that starts in its
/// first step (reading the config) until [`ConfigGate::open`].
struct ConfigGate<'a> {
    host: &'a Container,
}

impl<'a> ConfigGate<'a> {
    fn close(host: &'a Container) -> ConfigGate<'a> {
        host.sh(&format!(
            "mv {CONFIG} {CONFIG}.saved && mkfifo -m 644 {CONFIG}"
        ));
        ConfigGate { host }
    }

    /// Waits until the service's main process is blocked opening the FIFO, and returns its
    /// pid (in the container).
    fn wait_until_held(&self) -> String {
        self.host
            .wait_until("the switch is held reading its config", || {
                let pid = self.host.unit_property(SERVICE, "MainPID");
                if pid == "0" {
                    return None;
                }
                let wchan = self.host.run(&["cat", &format!("/proc/{pid}/wchan")]);
                (String::from_utf8_lossy(&wchan.stdout) == "wait_for_partner").then_some(pid)
            })
    }

    /// Lets the held switch read the real config file.
    fn open(&self) {
        self.host.sh(&format!("cat {CONFIG}.saved > {CONFIG}"));
    }

    /// Puts the real file back (the FIFO has been read, or nothing waits on it).
    fn restore(self) {
        self.host
            .sh(&format!("rm {CONFIG} && mv {CONFIG}.saved {CONFIG}"));
    }
}

/// While the switch is held before it is ready, the service is `activating` and the probe
/// (After=message-switch.service) waits; once the switch is ready, the probe starts and is
/// answered.
fn units_ordered_after_start_once_it_answers(
    host: &Container,
    results: &Path,
    activation: Activation,
) {
    host.ok(&["systemctl", "stop", SERVICE]);
    if activation == Activation::SelfBound {
        host.ok(&["systemctl", "stop", SOCKET]);
        host.ok(&["systemctl", "mask", "--runtime", SOCKET]);
    }
    let record = results.join("probe");
    let _ = std::fs::remove_file(&record);
    let gate = ConfigGate::close(host);
    host.ok(&["systemctl", "start", "--no-block", PROBE]);
    gate.wait_until_held();
    let state = (
        host.unit_property(SERVICE, "ActiveState"),
        host.unit_property(SERVICE, "SubState"),
    );
    if state != ("activating".to_owned(), "start".to_owned()) {
        host.fail(&format!(
            "{activation:?}: {SERVICE} is {state:?} while the switch has not even read its config \
             (not yet READY=1): it must be activating/start"
        ));
    }
    let probe = host.unit_property(PROBE, "ActiveState");
    let jobs = host.ok(&["systemctl", "list-jobs", "--no-legend", "--no-pager"]);
    if probe != "inactive" || record.exists() || !jobs.contains(PROBE) {
        host.fail(&format!(
            "{activation:?}: {PROBE} (After={SERVICE}) is {probe} while the switch is not ready; \
             its start job must wait. Jobs:\n{jobs}"
        ));
    }
    let socket_state = host.unit_property(SOCKET, "ActiveState");
    let expected_socket = match activation {
        Activation::Socket => "active",
        Activation::SelfBound => "inactive",
    };
    assert_eq!(socket_state, expected_socket, "{activation:?}: {SOCKET}");
    gate.open();
    let found = host.wait_until("the probe has recorded what it found", || {
        std::fs::read_to_string(&record).ok()
    });
    if found != "switch active\nconnect answered\n" {
        host.fail(&format!(
            "{activation:?}: at the start of {PROBE} the switch must be active and answer; it found:\n{found}"
        ));
    }
    assert_eq!(host.unit_property(PROBE, "Result"), "success");
    gate.restore();
    if activation == Activation::SelfBound {
        host.ok(&["systemctl", "stop", SERVICE]);
        host.ok(&["systemctl", "unmask", "--runtime", SOCKET]);
        host.ok(&["systemctl", "start", SOCKET, SERVICE]);
    }
}

/// A client connecting while the service restarts (old switch gone, new one not ready)
/// lands in the backlog of the socket systemd holds, and is answered by the new switch.
fn a_client_connecting_during_a_restart_gets_its_answer(host: &Container) {
    let old = host.unit_property(SERVICE, "MainPID");
    assert_ne!(old, "0", "{SERVICE} runs before the restart");
    let gate = ConfigGate::close(host);
    host.ok(&["systemctl", "restart", "--no-block", SERVICE]);
    let new = gate.wait_until_held();
    assert_ne!(new, old, "a new switch process");
    let socket = host.host_path("/run/message-switch/sock");
    let mut client = UnixStream::connect(&socket).unwrap_or_else(|error| {
        host.fail(&format!(
            "connecting to {} during the restart: {error}",
            socket.display()
        ))
    });
    client
        .write_all(b"GET / HTTP/1.1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        .expect("write the request");
    // Nobody can have answered: the only switch is still reading its config.
    client.set_nonblocking(true).expect("non-blocking");
    let mut byte = [0u8; 1];
    match client.read(&mut byte) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        other => host.fail(&format!("an answer before the switch started: {other:?}")),
    }
    client.set_nonblocking(false).expect("blocking");
    client
        .set_read_timeout(Some(CONTAINER_DEADLINE))
        .expect("read timeout");
    gate.open();
    let mut answer = Vec::new();
    if let Err(error) = client.read_to_end(&mut answer) {
        host.fail(&format!(
            "no answer to the client that connected during the restart: {error}"
        ));
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.contains("\"start_time\""),
        "the diagnostics of the new switch: {answer}"
    );
    assert_eq!(host.unit_property(SERVICE, "ActiveState"), "active");
    assert_eq!(host.unit_property(SERVICE, "MainPID"), new);
    gate.restore();
}

/// `systemctl stop`: SIGTERM, a graceful shutdown, exit status 0; the socket stays.
fn stop_ends_it_with_exit_status_0(host: &Container) {
    host.ok(&["systemctl", "stop", SERVICE]);
    let show = host.ok(&[
        "systemctl",
        "show",
        "-p",
        "ActiveState,Result,ExecMainCode,ExecMainStatus",
        SERVICE,
    ]);
    // ExecMainCode 1 is CLD_EXITED: the switch exited by itself, not killed by the signal.
    for wanted in [
        "ActiveState=inactive",
        "Result=success",
        "ExecMainCode=1",
        "ExecMainStatus=0",
    ] {
        if !show.lines().any(|line| line == wanted) {
            host.fail(&format!("after systemctl stop, {wanted} expected:\n{show}"));
        }
    }
    assert_eq!(
        host.unit_property(SOCKET, "ActiveState"),
        "active",
        "the socket outlives the service"
    );
    // And so does its file, with the directory it is in (and a state directory the hosts'
    // stock config puts there): a service with RuntimeDirectory= would have them removed at
    // every stop on the dom0's systemd 219, which ignores RuntimeDirectoryPreserve=.
    let socket = host.host_path("/run/message-switch/sock");
    if !socket.exists() {
        host.fail(&format!(
            "{} is gone after systemctl stop {SERVICE}",
            socket.display()
        ));
    }
}

/// A config file the switch cannot parse: the start fails with exit status 1, and the
/// reason is in the journal as an error. The real file back, the switch starts again.
fn a_bad_config_fails_the_start_with_an_error_entry(host: &Container) {
    host.sh(&format!(
        "cp {CONFIG} {CONFIG}.saved && echo '((path' > {CONFIG}"
    ));
    let started = host.run(&["systemctl", "start", SERVICE]);
    assert!(!started.status.success(), "the start fails");
    host.wait_until("the failed start is recorded", || {
        (host.unit_property(SERVICE, "ExecMainStatus") == "1").then_some(())
    });
    host.sh(&format!("mv {CONFIG}.saved {CONFIG}"));
    host.ok(&["systemctl", "reset-failed", SERVICE]);
    host.ok(&["systemctl", "restart", SERVICE]);
    assert_eq!(host.unit_property(SERVICE, "ActiveState"), "active");
    let errors = host.ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-p",
        "err",
        "_SYSTEMD_UNIT=message-switch.service",
    ]);
    if !errors
        .lines()
        .any(|line| line.starts_with("message-switch: ") && line.contains(CONFIG))
    {
        host.fail(&format!(
            "journalctl -p err has no line saying why the switch did not start:\n{errors}"
        ));
    }
}

/// Every line the switch wrote: a plain string (journalctl's JSON shows a message with
/// control characters, such as colour codes, as an array of bytes), at the priority of its
/// level: tracing's events by their level, the fatal error line 3, other lines 6 (info).
fn the_journal_has_plain_lines_at_their_levels_priorities(host: &Container) {
    let json = host.ok(&[
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        "_SYSTEMD_UNIT=message-switch.service",
        "_TRANSPORT=stdout",
    ]);
    let mut seen = std::collections::BTreeSet::new();
    for entry in json.lines() {
        let entry: serde_json::Value = serde_json::from_str(entry).expect("journalctl's JSON");
        let Some(message) = entry["MESSAGE"].as_str() else {
            host.fail(&format!("a message that is not plain text: {entry}"));
        };
        let priority = entry["PRIORITY"].as_str().expect("a priority");
        let (kind, expected) = if message.starts_with("message-switch: ") {
            ("fatal error", "3")
        } else if message.starts_with("ERROR ") {
            ("ERROR event", "3")
        } else if message.starts_with(" WARN ") {
            ("WARN event", "4")
        } else if message.starts_with(" INFO ") {
            ("INFO event", "6")
        } else if message.starts_with("DEBUG ") || message.starts_with("TRACE ") {
            ("DEBUG/TRACE event", "7")
        } else {
            ("other line", "6")
        };
        if message.contains('\x1b') || message.starts_with('<') || priority != expected {
            host.fail(&format!(
                "{kind} at priority {priority} (want {expected}, plain text): {message:?}"
            ));
        }
        seen.insert(kind);
    }
    for kind in ["fatal error", "INFO event", "other line"] {
        assert!(seen.contains(kind), "no {kind} in the journal:\n{json}");
    }
}
