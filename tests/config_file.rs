//! `message-switch --config FILE`, the built binary: the original's file format, our own
//! options as fields, the command line overriding the file, and malformed files refused
//! with the file, line and column before anything is opened.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::Spawned;
use common::wait_until;
use message_switch::protocol::QueueName;

const SWITCH: &str = env!("CARGO_BIN_EXE_message-switch");

/// `message-switch --config CONFIG ARGS…`, running.
fn start(config: &Path, args: &[&str]) -> Spawned {
    Spawned::start(
        Command::new(SWITCH)
            .arg("--config")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "warn"),
    )
}

/// Sends SIGTERM and checks the switch stops cleanly.
fn stop(mut switch: Spawned) {
    switch.terminate();
    assert!(switch.wait().0, "a clean exit");
}

/// Runs `future` to completion on a fresh single-threaded runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("message-switch.conf");
    std::fs::write(&file, text).expect("write the config file");
    file
}

#[test]
fn the_original_file_listens_only_on_its_unix_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock");
    // As sexp_of_t writes the original's record (Sexp.to_string_hum), with a comment.
    let text = format!(
        "; /etc/message-switch.conf\n((path {})\n (pidfile ())\n (configfile ())\n (statedir ()))\n",
        socket.display()
    );
    let switch = start(&write(dir.path(), &text), &[]);
    let lines = switch.lines_through("listening on unix ");
    assert_eq!(
        lines,
        vec![format!("listening on unix {}", socket.display())],
        "no TCP listener"
    );
    let names = block_on(async {
        let mut connection = common::connect(&socket).await;
        connection
            .list(&QueueName::from(""), false)
            .await
            .expect("list")
    });
    assert!(names.is_empty());
    stop(switch);
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn the_file_hosts_ship_byte_for_byte_but_for_the_paths() {
    // XCP-ng's /etc/message-switch.conf (xcp-ng-rpms/xapi, SOURCES/message-switch-conf),
    // with its two paths moved into a temporary directory. The original ignores `statedir`;
    // we apply it.
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock");
    let statedir = dir.path().join("state");
    let text = format!(
        "((path {})(pidfile())(configfile())(statedir ({})))\n",
        socket.display(),
        statedir.display()
    );
    let switch = start(&write(dir.path(), &text), &[]);
    let lines = switch.lines_through("listening on unix ");
    assert_eq!(
        lines,
        vec![
            format!(
                "recovered 0 queues and 0 messages from {}",
                statedir.display()
            ),
            format!("listening on unix {}", socket.display()),
        ],
        "durable, and no TCP listener"
    );
    block_on(async {
        let mut connection = common::connect(&socket).await;
        connection
            .create_persistent(&QueueName::from("kept"))
            .await
            .expect("create")
    });
    stop(switch);
    // Started again from the same file, the queue is still there.
    let switch = start(&write(dir.path(), &text), &[]);
    assert_eq!(
        switch.lines_through("listening on unix ")[0],
        format!(
            "recovered 1 queues and 0 messages from {}",
            statedir.display()
        )
    );
    stop(switch);
}

#[test]
fn every_option_is_a_field_and_every_field_applies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let statedir = dir.path().join("state");
    let text = format!(
        r#"#| our own options beside the original's |#
((path "{}")
 (pidfile ({}))
 (statedir ({}))
 (listen (127.0.0.1:0))
 (queues-max 1)
 (salvage false)
 (socket_mode 0640))"#,
        socket.display(),
        pidfile.display(),
        statedir.display()
    );
    let switch = start(&write(dir.path(), &text), &[]);
    let lines = switch.lines_through("listening on unix ");
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("listening on tcp 127.0.0.1:")),
        "{lines:?}"
    );
    assert!(statedir.is_dir(), "the state directory is used");
    // The file is created empty, then written: wait for the number.
    let pid = wait_until("the pid file is written", || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .filter(|pid| !pid.is_empty())
    });
    assert_eq!(pid, switch.child.id().to_string());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket)
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
    let second = block_on(async {
        let mut connection = common::connect(&socket).await;
        connection
            .create_persistent(&QueueName::from("first"))
            .await
            .expect("one queue is allowed");
        connection
            .create_persistent(&QueueName::from("second"))
            .await
    });
    assert!(second.is_err(), "queues-max 1 applies: {second:?}");
    stop(switch);
    assert!(!pidfile.exists(), "the pid file is removed on exit");
}

#[test]
fn the_command_line_overrides_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let from_file = dir.path().join("file-sock");
    let from_cli = dir.path().join("cli-sock");
    let text = format!("((path {}) (queues-max 0))", from_file.display());
    let cli = from_cli.to_str().expect("UTF-8 path");
    let switch = start(
        &write(dir.path(), &text),
        &["--path", cli, "--queues-max", "5"],
    );
    assert_eq!(
        switch.lines_through("listening on unix "),
        vec![format!("listening on unix {cli}")]
    );
    assert!(!from_file.exists());
    let created = block_on(async {
        let mut connection = common::connect(&from_cli).await;
        connection.create_persistent(&QueueName::from("q")).await
    });
    assert!(created.is_ok(), "--queues-max 5 wins over the file's 0");
    stop(switch);
}

#[test]
fn malformed_files_are_refused_with_position_before_anything_opens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let statedir = dir.path().join("state");
    // Every file names a socket, a pid file and a state directory before its mistake: none
    // may exist afterwards.
    let head = format!(
        "((path {})\n (pidfile ({}))\n (statedir ({}))\n",
        socket.display(),
        pidfile.display(),
        statedir.display()
    );
    let cases = [
        (" (colour blue))", "4:2: unknown field `colour` (the fields are the long options of --help)"),
        (" (path /elsewhere))", "4:2: duplicate field `path` (first given at 1:2)"),
        (" (queues-max lots))", "4:14: field `queues-max`: invalid value 'lots' for '--queues-max <N>': invalid digit found in string"),
        (" (listen (127.0.0.1:8080 (nested))))", "4:26: field `listen` takes a value or a list of values"),
        (" (salvage yes))", "4:11: field `salvage` takes true or false"),
        (" (socket-mode 999))", "4:15: field `socket-mode`: invalid value '999' for '--socket-mode <MODE>': not an octal file mode: 999"),
        (" (threads 0))", "4:11: field `threads`: invalid value '0' for '--threads <N>': 0 is not in 1..=1024"),
        (" (trace-entries (1 2)))", "4:17: field `trace-entries` takes one value: value, (value) or () for none"),
        (" (queues-max 5)", "1:1: unbalanced parentheses: this `(` is never closed"),
        (" (queues-max 5)))", "4:17: unbalanced parentheses: `)` without a matching `(`"),
        (" (path \"/x\\q\"))", "4:11: bad escape `\\q` in a quoted atom"),
        (" (path \"/x))", "4:8: unterminated string: this `\"` is never closed"),
        (" #| (queues-max 5) )", "4:2: unterminated comment: this `#|` is never closed"),
        (" (config /etc/other.conf))", "4:2: field `config` cannot be set in a config file"),
    ];
    for (tail, expected) in cases {
        let file = write(dir.path(), &format!("{head}{tail}"));
        let output = Command::new(SWITCH)
            .arg("--config")
            .arg(&file)
            .env("RUST_LOG", "warn")
            .output()
            .expect("message-switch runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{tail}: refused");
        assert_eq!(
            stderr.trim_end(),
            format!("message-switch: {}:{expected}", file.display()),
            "{tail}"
        );
        assert!(!socket.exists(), "{tail}: no socket");
        assert!(!pidfile.exists(), "{tail}: no pid file");
        assert!(!statedir.exists(), "{tail}: no state directory");
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let output = Command::new(SWITCH)
        .args(["--config", "/nonexistent/message-switch.conf"])
        .output()
        .expect("message-switch runs");
    assert!(!output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        "message-switch: cannot read the config file /nonexistent/message-switch.conf: \
         No such file or directory (os error 2)"
    );
}
