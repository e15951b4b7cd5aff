//! The packaging (packaging/, [package.metadata.deb] in Cargo.toml, docs/deploy.md).
//!
//! Always run: the systemd units' key lines, the shipped config file starting the switch
//! through the unit's own `ExecStart` line, and the man pages and completions covering every
//! option. Ignored (slow: a `dist` build): the packages built by
//! `packaging/build-packages.sh`, their file lists, conffiles, man pages, units and
//! `ExecStart`. `.ci/run` runs it:
//!
//! ```sh
//! cargo test --test packaging -- --ignored
//! ```
//!
//! That test also checks that the binaries in both packages, and the RPM's `Requires`, need
//! no more than a XenServer 8 / XCP-ng 8 dom0 (glibc 2.17) has (packaging/loader_needs.rs).
//!
//! That test needs `dpkg-deb` and `dpkg-shlibdeps` (dpkg-dev), `man` (Debian's man-db),
//! `rpmbuild` and `rpm2archive` (Debian's rpm), `readelf` (binutils), `systemd-analyze` and
//! `systemd-socket-activate` (systemd), and fails with a message naming whichever is missing.

mod common;
#[path = "packaging/loader_needs.rs"]
mod loader_needs;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use message_switch::cli;

use common::process::Spawned;
use common::wait_until;
use loader_needs::LoaderNeeds;

const SERVICE: &str = include_str!("../packaging/message-switch.service");
const SOCKET: &str = include_str!("../packaging/message-switch.socket");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What the original's unit runs, which ours must run too (xapi-project/xen-api,
/// scripts/message-switch.service).
const ORIGINAL_EXEC_START: &str = "/usr/sbin/message-switch --config /etc/message-switch.conf";

/// The values of `key` in `[section]` of a systemd unit file, in order.
fn unit_values(unit: &str, section: &str, key: &str) -> Vec<String> {
    let mut current = "";
    let mut values = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name;
        } else if let Some((k, v)) = line.split_once('=') {
            if current == section && k.trim() == key {
                values.push(v.trim().to_owned());
            }
        }
    }
    values
}

/// The single value of `key` in `[section]`, failing the test if it is not set exactly once.
fn unit_value(unit: &str, section: &str, key: &str) -> String {
    let values = unit_values(unit, section, key);
    assert_eq!(values.len(), 1, "[{section}] {key}= once, got {values:?}");
    values.into_iter().next().expect("checked above")
}

#[test]
fn the_service_replaces_the_original_one_for_one() {
    assert_eq!(
        unit_value(SERVICE, "Service", "ExecStart"),
        ORIGINAL_EXEC_START
    );
    assert_eq!(unit_value(SERVICE, "Service", "Restart"), "on-failure");
    // Better than the original: readiness, and logs to the journal.
    assert_eq!(unit_value(SERVICE, "Service", "Type"), "notify");
    assert_eq!(unit_value(SERVICE, "Service", "StandardError"), "journal");
    // systemd removes a stopped service's RuntimeDirectory, and with it the socket file that
    // message-switch.socket still listens on and the hosts' stock state directory in it; the
    // dom0's systemd 219 ignores RuntimeDirectoryPreserve=, so the unit has neither.
    for key in ["RuntimeDirectory", "RuntimeDirectoryPreserve"] {
        assert_eq!(
            unit_values(SERVICE, "Service", key),
            Vec::<String>::new(),
            "{key}="
        );
    }
    let wants = unit_values(SERVICE, "Unit", "Wants").join(" ");
    let after = unit_values(SERVICE, "Unit", "After").join(" ");
    assert!(wants.split(' ').any(|unit| unit == "message-switch.socket"));
    assert!(after.split(' ').any(|unit| unit == "message-switch.socket"));
    assert_eq!(
        unit_value(SERVICE, "Install", "WantedBy"),
        "multi-user.target"
    );
}

#[test]
fn the_socket_unit_holds_the_socket_of_the_shipped_config() {
    let listen = unit_value(SOCKET, "Socket", "ListenStream");
    let configured = shipped_config_socket();
    // /var/run is a symlink to /run; systemd wants the /run spelling in units.
    assert_eq!(
        Path::new(&listen),
        Path::new("/run").join(
            configured
                .strip_prefix("/var/run")
                .expect("the original's /var/run path")
        )
    );
    // The socket outlives restarts of the toolstack (toolstack.target), of which the service
    // is part.
    assert_eq!(unit_value(SERVICE, "Unit", "PartOf"), "toolstack.target");
    assert!(unit_values(SOCKET, "Unit", "PartOf").is_empty());
    assert_eq!(unit_value(SOCKET, "Socket", "SocketMode"), "0600");
    assert_eq!(unit_value(SOCKET, "Socket", "RemoveOnStop"), "yes");
    assert_eq!(unit_value(SOCKET, "Install", "WantedBy"), "sockets.target");
}

/// The socket of packaging/message-switch.conf, read by the switch's own parser; the file
/// sets nothing else, so the switch listens only there, as the original.
fn shipped_config_socket() -> PathBuf {
    let file = Path::new(REPO).join("packaging/message-switch.conf");
    let argv = vec![
        OsString::from("message-switch"),
        OsString::from("--config"),
        file.into_os_string(),
    ];
    let args = cli::switch::Args::from_argv(argv).expect("the shipped config file parses");
    assert!(args.listen.is_empty(), "no TCP listener: {:?}", args.listen);
    assert_eq!(args.statedir, None);
    args.path.expect("the shipped config names the socket")
}

#[test]
fn the_units_exec_start_serves_with_the_shipped_config() {
    let binaries = |path: &str| match path {
        "/usr/sbin/message-switch" => PathBuf::from(env!("CARGO_BIN_EXE_message-switch")),
        "/etc/message-switch.conf" => Path::new(REPO).join("packaging/message-switch.conf"),
        other => panic!("unexpected path in ExecStart: {other}"),
    };
    serve_through_exec_start(
        SERVICE,
        binaries,
        Path::new(env!("CARGO_BIN_EXE_message-cli")),
        Start::Alone,
    );
}

/// How [`serve_through_exec_start`] starts the switch.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    /// As the service alone: the switch binds its socket itself, and removes it on exit.
    Alone,
    /// As with message-switch.socket: `systemd-socket-activate` binds the socket, and starts
    /// the switch with it (`LISTEN_FDS`) when the first client connects; the socket file
    /// belongs to the activator and stays.
    SocketActivated,
}

/// Runs the unit's `ExecStart` line (its paths mapped by `map`) with `--path` pointing into
/// a temporary directory, and checks that `message-cli` gets answers from it and that it
/// stops cleanly.
fn serve_through_exec_start(
    unit: &str,
    map: impl Fn(&str) -> PathBuf,
    message_cli: &Path,
    start: Start,
) {
    let exec_start = unit_value(unit, "Service", "ExecStart");
    let mut words = exec_start.split_whitespace();
    let program = map(words.next().expect("ExecStart names a program"));
    let args: Vec<PathBuf> = words
        .map(|word| {
            if word.starts_with('/') {
                map(word)
            } else {
                PathBuf::from(word)
            }
        })
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("sock");
    let mut command = match start {
        Start::Alone => Command::new(&program),
        Start::SocketActivated => {
            let mut command = Command::new("systemd-socket-activate");
            command
                .arg("--listen")
                .arg(&socket)
                .arg("--fdname=message-switch")
                .arg("--")
                .arg(&program);
            command
        }
    };
    command
        .args(&args)
        .arg("--path")
        .arg(&socket)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    let mut switch = Spawned::start(&mut command);
    match start {
        Start::Alone => wait_until("the switch accepts", || {
            if let Some(status) = switch.child.try_wait().expect("try_wait") {
                panic!("{exec_start} --path {} exited: {status}", socket.display());
            }
            UnixStream::connect(&socket).ok()
        })
        .shutdown(std::net::Shutdown::Both)
        .expect("close the probe"),
        // The first client's connection is what starts the switch: let message-cli's be the
        // first, once the activator listens.
        Start::SocketActivated => drop(switch.line_starting("Listening on")),
    }
    let cli = |args: &[&str]| {
        let mut command = Command::new(message_cli);
        command.arg("--path").arg(&socket).args(args);
        stdout(&succeed(&mut command))
    };
    assert!(cli(&["diagnostics"]).contains("Switch started"));
    cli(&["list"]);
    cli(&["shutdown"]);
    let (success, stderr) = switch.wait();
    assert!(success, "the switch failed: {stderr:?}");
    assert_eq!(
        socket.exists(),
        start == Start::SocketActivated,
        "only a socket the switch bound itself is removed on exit"
    );
}

/// The long options of `command` itself, without the leading dashes.
fn long_options(command: &clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter(|argument| !argument.is_hide_set())
        .filter_map(|argument| argument.get_long())
        .map(str::to_owned)
        .collect()
}

/// `command` and its subcommands, each with the name of its man page.
fn pages(command: clap::Command) -> Vec<(String, clap::Command)> {
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let name = command.get_name().to_owned();
    let mut pages = vec![(name.clone(), command.clone())];
    for subcommand in command.get_subcommands() {
        pages.push((
            format!("{name}-{}", subcommand.get_name()),
            subcommand.clone(),
        ));
    }
    pages
}

#[test]
fn man_pages_and_completions_cover_every_option() {
    let dir = tempfile::tempdir().expect("temporary directory");
    succeed(
        Command::new(env!("CARGO_BIN_EXE_message-switch-assets"))
            .args(["--date", "2026-01-02"])
            .arg(dir.path()),
    );
    let read = |file: &str| {
        std::fs::read_to_string(dir.path().join(file))
            .unwrap_or_else(|error| panic!("{file}: {error}"))
    };
    let mut written = 0;
    for command in [cli::switch::command(), cli::message_cli::command()] {
        let name = command.get_name().to_owned();
        let bash = read(&format!("completions/bash/{name}"));
        let zsh = read(&format!("completions/zsh/_{name}"));
        let fish = read(&format!("completions/fish/{name}.fish"));
        assert!(zsh.starts_with(&format!("#compdef {name}")));
        for (page, command) in pages(command) {
            let man = read(&format!("man/{page}.8"));
            written += 1;
            assert!(
                man.contains(&format!(".TH {page} 8 2026-01-02 ")),
                "{page}.8: title line in section 8 with the date"
            );
            for subcommand in command.get_subcommands() {
                let reference = format!("{page}-{}(8)", subcommand.get_name());
                assert!(
                    man.contains(&reference.replace('-', "\\-")),
                    "{page}.8 refers to {reference}"
                );
            }
            for option in long_options(&command) {
                // roff escapes each dash of an option.
                let roff = format!("\\-\\-{}", option.replace('-', "\\-"));
                assert!(man.contains(&roff), "{page}.8 documents --{option}");
                assert!(
                    bash.contains(&format!("--{option}")),
                    "bash: {page} --{option}"
                );
                assert!(
                    zsh.contains(&format!("--{option}")),
                    "zsh: {page} --{option}"
                );
                assert!(
                    fish.contains(&format!("-l {option}")),
                    "fish: {page} --{option}"
                );
            }
        }
    }
    let man_dir = std::fs::read_dir(dir.path().join("man")).expect("man/");
    assert_eq!(
        man_dir.count(),
        written,
        "no page that is not checked above"
    );
}

#[test]
fn the_assets_tool_wants_a_date_and_a_directory() {
    let ran = Command::new(env!("CARGO_BIN_EXE_message-switch-assets"))
        .arg("somewhere")
        .output()
        .expect("message-switch-assets runs");
    assert_eq!(ran.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(stderr.contains("--date <YYYY-MM-DD>"), "{stderr}");
    assert!(!Path::new("somewhere").exists());
}

/// What both packages install, relative to `/`.
const INSTALLED: &[&str] = &[
    "usr/sbin/message-switch",
    "usr/sbin/message-cli",
    "etc/message-switch.conf",
    "usr/lib/systemd/system/message-switch.service",
    "usr/lib/systemd/system/message-switch.socket",
    "usr/share/man/man8/message-switch.8.gz",
    "usr/share/man/man8/message-cli.8.gz",
    "usr/share/man/man8/message-cli-diagnostics.8.gz",
    "usr/share/bash-completion/completions/message-switch",
    "usr/share/bash-completion/completions/message-cli",
    "usr/share/fish/vendor_completions.d/message-switch.fish",
    "usr/share/fish/vendor_completions.d/message-cli.fish",
    "usr/share/doc/message-switch-rs/deploy.md",
];

/// Runs `program` with `args`, failing the test with its stderr unless it succeeds.
fn run(program: &str, args: &[&str]) -> Output {
    succeed(Command::new(program).args(args))
}

/// Runs `command` (stdin closed), failing the test with its stderr unless it succeeds.
fn succeed(command: &mut Command) -> Output {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?} (is it installed?): {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The one file in `dir` whose name ends with `suffix`.
fn built_package(dir: &Path, suffix: &str) -> String {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("target/packages exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {suffix} in {}: {found:?}",
        dir.display()
    );
    found[0].to_string_lossy().into_owned()
}

#[test]
#[ignore = "slow: builds the packages (cargo test --test packaging -- --ignored; .ci/run)"]
fn the_packages_install_a_working_switch() {
    let packages = Path::new(REPO).join("target/packages");
    // Old packages (another version) would make the file names ambiguous.
    let _ = std::fs::remove_dir_all(&packages);
    run(
        &format!("{REPO}/packaging/build-packages.sh"),
        &["deb", "rpm"],
    );
    let deb = built_package(&packages, ".deb");
    let rpm = built_package(&packages, ".rpm");
    check_loads_on_the_oldest_host(&deb, &rpm);

    // The Debian package: file list, conffile, then the files themselves.
    let listing = stdout(&run("dpkg-deb", &["-c", &deb]));
    for file in INSTALLED
        .iter()
        .chain(&["usr/share/zsh/vendor-completions/_message-cli"])
    {
        assert!(
            listing.contains(&format!("./{file}\n")),
            "the .deb installs /{file}:\n{listing}"
        );
    }
    assert!(
        !listing.contains("message-switch-assets"),
        "the generator is not installed"
    );
    let control = tempfile::tempdir().expect("temporary directory");
    run("dpkg-deb", &["-e", &deb, &control.path().to_string_lossy()]);
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).expect("conffiles");
    assert!(
        conffiles
            .lines()
            .any(|line| line == "/etc/message-switch.conf"),
        "{conffiles}"
    );
    let fields = stdout(&run("dpkg-deb", &["-f", &deb, "Package", "Provides"]));
    assert_eq!(
        fields,
        "Package: message-switch-rs\nProvides: message-switch\n"
    );
    let postinst = std::fs::read_to_string(control.path().join("postinst")).expect("postinst");
    for unit in ["message-switch.service", "message-switch.socket"] {
        assert!(
            postinst.contains(&format!("deb-systemd-helper enable {unit}")),
            "postinst enables {unit}:\n{postinst}"
        );
    }

    let root = tempfile::tempdir().expect("temporary directory");
    let root = root.path();
    // `systemd-analyze verify --root` resolves every unit inside the root: give it the
    // host's (sockets.target, sysinit.target …), then the package's files over them.
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).expect("unit directory");
    run(
        "cp",
        &["-a", "/usr/lib/systemd/system/.", &units.to_string_lossy()],
    );
    run("dpkg-deb", &["-x", &deb, &root.to_string_lossy()]);
    check_man_pages(root);
    check_units(root);
    let in_root = |path: &str| root.join(path.trim_start_matches('/'));
    let service =
        std::fs::read_to_string(in_root("/usr/lib/systemd/system/message-switch.service"))
            .expect("the installed unit");
    let message_cli = in_root("/usr/sbin/message-cli");
    serve_through_exec_start(&service, in_root, &message_cli, Start::Alone);
    serve_through_exec_start(&service, in_root, &message_cli, Start::SocketActivated);

    // The RPM: the same files as the .deb (two sources: Cargo.toml and the spec file), the
    // config file marked noreplace, the original replaced, the units handled.
    let deb_files: BTreeSet<String> = listing
        .lines()
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().last())
        .map(|file| {
            file.trim_start_matches('.')
                .replace("/zsh/vendor-completions/", "/zsh/site-functions/")
        })
        .filter(|file| file != "/usr/share/doc/message-switch-rs/copyright")
        .collect();
    let rpm_files = stdout(&run(
        "rpm",
        &[
            "-qp",
            "--qf",
            "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
            &rpm,
        ],
    ));
    let rpm_regular: BTreeSet<String> = rpm_files
        .lines()
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| line.split_whitespace().last())
        .map(str::to_owned)
        .collect();
    assert_eq!(
        rpm_regular, deb_files,
        "the .rpm and the .deb install the same files"
    );
    assert!(
        rpm_files
            .lines()
            .any(|line| line == "-rw-r--r-- cn /etc/message-switch.conf"),
        "%config(noreplace) /etc/message-switch.conf:\n{rpm_files}"
    );
    let provides = stdout(&run("rpm", &["-qp", "--provides", &rpm]));
    assert!(
        provides.lines().any(|line| line.trim() == "message-switch"),
        "{provides}"
    );
    let obsoletes = stdout(&run("rpm", &["-qp", "--obsoletes", &rpm]));
    assert!(
        obsoletes
            .lines()
            .any(|line| line.trim() == "message-switch"),
        "{obsoletes}"
    );
    let scripts = stdout(&run("rpm", &["-qp", "--scripts", &rpm]));
    assert!(
        scripts
            .contains("systemctl --no-reload preset message-switch.socket message-switch.service"),
        "{scripts}"
    );
}

/// The binaries the packages ship, and the RPM's automatic requirements, need nothing that a
/// XenServer 8 / XCP-ng 8 dom0 (glibc 2.17) lacks; the failure lists every problem found.
fn check_loads_on_the_oldest_host(deb: &str, rpm: &str) {
    let deb_root = tempfile::tempdir().expect("temporary directory");
    run("dpkg-deb", &["-x", deb, &deb_root.path().to_string_lossy()]);
    let rpm_root = tempfile::tempdir().expect("temporary directory");
    // rpm2archive (of the rpm package, like rpmbuild) writes the payload of FILE as a tar.gz
    // FILE.tgz beside it: of a copy, so that nothing is added to target/packages.
    let copy = rpm_root.path().join("package.rpm");
    std::fs::copy(rpm, &copy).expect("a copy of the .rpm");
    run("rpm2archive", &[&copy.to_string_lossy()]);
    run(
        "tar",
        &[
            "-xzf",
            &rpm_root.path().join("package.rpm.tgz").to_string_lossy(),
            "-C",
            &rpm_root.path().to_string_lossy(),
        ],
    );
    let mut problems = Vec::new();
    for (package, root) in [(deb, deb_root.path()), (rpm, rpm_root.path())] {
        let package = Path::new(package)
            .file_name()
            .expect("a file name")
            .to_string_lossy();
        for binary in ["usr/sbin/message-switch", "usr/sbin/message-cli"] {
            let needs = LoaderNeeds::read(&root.join(binary));
            // A binary read as needing nothing would pass whatever it was linked against.
            assert!(
                needs.libraries.iter().any(|library| library == "libc.so.6")
                    && !needs.versions.is_empty(),
                "{binary} of {package}: no libc.so.6 or no version needs read: {needs:?}"
            );
            problems.extend(
                needs
                    .problems()
                    .into_iter()
                    .map(|problem| format!("{package}: /{binary} {problem}")),
            );
        }
    }
    let requires = stdout(&run("rpm", &["-qp", "--requires", rpm]));
    assert!(
        requires.contains("libc.so.6(GLIBC_"),
        "rpmbuild found the binaries' glibc versions:\n{requires}"
    );
    problems.extend(loader_needs::rpm_requirement_problems(&requires));
    assert!(
        problems.is_empty(),
        "the packaged binaries would not load on a XenServer 8 / XCP-ng 8 dom0, whose newest \
         glibc version is {} (packaging/build-packages.sh builds them for it with cargo \
         zigbuild):\n{}",
        loader_needs::GLIBC_FLOOR,
        problems.join("\n")
    );
}

/// Every installed man page renders with man-db without a warning, under its own name; the
/// two commands' pages document `--path`.
fn check_man_pages(root: &Path) {
    let dir = root.join("usr/share/man/man8");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("the man pages") {
        let page = entry.expect("directory entry").path();
        let file = page.file_name().expect("a file name").to_string_lossy();
        let name = file
            .strip_suffix(".8.gz")
            .expect("a compressed page of section 8");
        let output = Command::new("man")
            // Every troff warning (the default is only undefined macros).
            .args(["--warnings=w", "-l"])
            .arg(&page)
            .output()
            .expect("man (man-db) runs");
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "man -l {}: {}",
            page.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        // Justified text: compare words.
        let text = stdout(&output);
        let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains(&format!("NAME {name} - ")), "{text}");
        if name == "message-switch" || name == "message-cli" {
            assert!(words.contains("--path <SOCK>"), "{text}");
        }
        names.insert(name.to_owned());
    }
    assert!(
        names.contains("message-switch") && names.contains("message-cli"),
        "{names:?}"
    );
}

/// `systemd-analyze verify` accepts the installed units without a warning, with their
/// `ExecStart` program looked up in `root` (which holds the package's files).
fn check_units(root: &Path) {
    let root_arg = format!("--root={}", root.display());
    let output = Command::new("systemd-analyze")
        .args(["verify", "--man=no", &root_arg])
        .args(["message-switch.service", "message-switch.socket"])
        .output()
        .expect("systemd-analyze runs");
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
