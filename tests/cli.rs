//! `message-cli` end to end: the built binaries against a real `message-switch` process
//! (temporary socket, TCP port chosen by the OS), plus snapshots of every text format built
//! from fixed inputs, and of every `--help`.

mod common;

use std::io::Write;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;

use common::{wait_until, SwitchProcess, DEADLINE};
use message_switch::client::format;
use message_switch::protocol::{
    Diagnostics, Entry, Message, MessageId, MessageKind, Origin, QueueDiagnostics, QueueName,
    TraceEvent, TraceMessage,
};

/// The result of a finished command.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` to completion (failing the test after the deadline).
fn run(command: &mut Command) -> Ran {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    finish(child)
}

/// Runs `command`, asserts that it succeeded and returns its stdout.
fn run_ok(command: &mut Command) -> String {
    let ran = run(command);
    assert!(
        ran.status.success(),
        "{command:?} failed: {}\n{}",
        ran.status,
        ran.stderr
    );
    ran.stdout
}

/// Waits (up to the deadline) for a child started with piped stdout and stderr.
fn finish(child: Child) -> Ran {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    let output = receiver
        .recv_timeout(DEADLINE)
        .expect("the command finishes in time")
        .expect("the command's output");
    Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts `command` in the background with piped output.
fn spawn(command: &mut Command) -> Child {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts")
}

/// A background process, killed when dropped unless [`Background::finish`]ed, so that a
/// failing test leaves nothing running.
struct Background(Option<Child>);

impl Background {
    fn new(child: Child) -> Background {
        Background(Some(child))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("not finished yet")
    }

    /// Waits for the process to end by itself (up to the deadline).
    fn finish(mut self) -> Ran {
        finish(self.0.take().expect("not finished yet"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads a child's stdout line by line on a thread, so the test can wait for a line.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    common::process::lines_of(child.stdout.take().expect("piped stdout"))
}

/// Waits for a line satisfying `wanted`, returning every line read up to it.
fn read_until(lines: &mpsc::Receiver<String>, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("no wanted line; saw {seen:#?}"));
        let done = wanted(&line);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// Runs a future on a fresh runtime (the CLI tests are otherwise synchronous).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}

/// Asserts a snapshot stored under the top-level `snapshots/` directory as `cli__NAME.snap`.
fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => "../snapshots",
        prepend_module_to_snapshot => true,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

#[test]
fn the_quick_start_works_over_tcp() {
    let switch = SwitchProcess::start();
    let addr = switch.tcp.to_string();
    let cli = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_message-cli"));
        command.arg("--addr").arg(&addr).args(args);
        command
    };

    assert_eq!(
        run_ok(&mut cli(&["list"])),
        "",
        "a fresh switch lists nothing"
    );

    let mut call = Background::new(spawn(&mut cli(&["call", "foo", "--body", "hello"])));
    let before = wait_until("diagnostics shows the queued request", || {
        let text = run_ok(&mut cli(&["diagnostics"]));
        // The caller's reply listener may take a moment to make its first poll.
        (text.contains("      - hello\n") && text.contains("is waiting for a response\n"))
            .then_some(text)
    });
    assert!(
        before.contains("The following services have been called but have never started:\n- foo\n"),
        "{before}"
    );
    assert!(
        call.child().try_wait().expect("try_wait").is_none(),
        "the call blocks"
    );

    let _serve = Background::new(spawn(&mut cli(&["serve", "foo", "--program", "/bin/cat"])));
    let ran = call.finish();
    assert!(ran.status.success(), "{}", ran.stderr);
    assert_eq!(ran.stdout, "hello\n");

    let after = wait_until("diagnostics shows the request gone", || {
        let text = run_ok(&mut cli(&["diagnostics"]));
        (!text.contains("hello")).then_some(text)
    });
    assert!(
        after.contains("The following services are running:\n- foo\n"),
        "{after}"
    );
    assert_eq!(run_ok(&mut cli(&["list"])), "foo\n");
}

#[test]
fn list_shows_live_queues_and_filters_by_prefix() {
    let switch = SwitchProcess::start();
    block_on(async {
        let mut connection = switch.connection().await;
        for name in ["alpha", "alpine", "beta"] {
            connection
                .create_persistent(&name.into())
                .await
                .expect("create");
        }
        // A poll is what makes a queue "alive".
        for name in ["alpha", "beta"] {
            connection
                .transfer(None, Duration::ZERO, &[name.into()])
                .await
                .expect("transfer");
        }
    });
    let sorted = |text: String| {
        let mut names: Vec<String> = text.lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    assert_eq!(
        sorted(run_ok(&mut switch.cli(&["list"]))),
        ["alpha", "beta"]
    );
    assert_eq!(
        sorted(run_ok(&mut switch.cli(&["list", "--all"]))),
        ["alpha", "alpine", "beta"]
    );
    assert_eq!(
        run_ok(&mut switch.cli(&["list", "--prefix", "al"])),
        "alpha\n"
    );
    let all = run_ok(&mut switch.cli(&["list", "--all"]));
    snapshot("list_all", &all);
    assert_eq!(
        sorted(run_ok(
            &mut switch.cli(&["list", "--all", "--prefix", "al"])
        )),
        ["alpha", "alpine"]
    );
}

#[test]
fn call_takes_its_body_from_a_flag_a_file_or_stdin() {
    let switch = SwitchProcess::start();
    let _serve = Background::new(spawn(&mut switch.cli(&[
        "serve",
        "upper",
        "--program",
        "tr a-z A-Z",
    ])));
    assert_eq!(
        run_ok(&mut switch.cli(&["call", "upper", "--body", "from a flag"])),
        "FROM A FLAG\n"
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("body");
    std::fs::write(&file, "from a file\n").expect("write");
    let file = file.to_str().expect("utf-8 path");
    assert_eq!(
        run_ok(&mut switch.cli(&["call", "upper", "--file", file])),
        "FROM A FILE\n"
    );

    let mut call = switch
        .cli(&["call", "upper"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("call starts");
    let mut stdin = call.stdin.take().expect("piped stdin");
    stdin.write_all(b"from stdin\n").expect("write");
    drop(stdin);
    let ran = finish(call);
    assert!(ran.status.success(), "{}", ran.stderr);
    assert_eq!(ran.stdout, "FROM STDIN\n");
}

#[test]
fn without_flags_the_environment_names_the_switch() {
    let switch = SwitchProcess::start();
    let cli = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_message-cli"));
        command
            .env_remove("MESSAGE_SWITCH_PATH")
            .env_remove("MESSAGE_SWITCH_ADDR")
            .env("RUST_LOG", "warn");
        command
    };
    let socket = switch.socket.to_str().expect("UTF-8 path");
    let tcp = switch.tcp.to_string();
    // Each succeeds only if it reached the switch (an unreachable one exits 1).
    let via_path = run(cli()
        .env("MESSAGE_SWITCH_PATH", socket)
        .args(["list", "--all"]));
    assert!(via_path.status.success(), "{}", via_path.stderr);
    let via_addr = run(cli()
        .env("MESSAGE_SWITCH_ADDR", &tcp)
        .args(["diagnostics", "-v"]));
    assert!(via_addr.status.success(), "{}", via_addr.stderr);
    let with_equals = run(cli()
        .arg(format!("--path={socket}"))
        .args(["list", "--debug"]));
    assert!(with_equals.status.success(), "{}", with_equals.stderr);
    // The variable names a switch that is not there: the error says which.
    let missing = run(cli()
        .env("MESSAGE_SWITCH_PATH", "/nonexistent/sock")
        .env("MESSAGE_SWITCH_ADDR", &tcp)
        .arg("list"));
    assert_eq!(
        missing.stderr,
        "message-cli: cannot connect to the message switch at /nonexistent/sock \
         (No such file or directory)\n"
    );
}

#[test]
fn failures_are_one_clear_line_and_a_failing_exit() {
    let switch = SwitchProcess::start();
    let one_line_failure = |ran: Ran| -> String {
        assert!(!ran.status.success());
        assert_eq!(ran.stdout, "");
        assert_eq!(ran.stderr.lines().count(), 1, "{}", ran.stderr);
        ran.stderr
    };

    let ran = run(Command::new(env!("CARGO_BIN_EXE_message-cli")).args([
        "--path",
        "/nonexistent/message-switch.sock",
        "list",
    ]));
    assert_eq!(ran.status.code(), Some(1));
    let stderr = one_line_failure(ran);
    assert_eq!(
        stderr,
        "message-cli: cannot connect to the message switch at /nonexistent/message-switch.sock \
         (No such file or directory)\n"
    );

    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let stderr = one_line_failure(run(Command::new(env!("CARGO_BIN_EXE_message-cli"))
        .args(["--addr", &addr, "call", "foo", "--body", "x"])));
    assert_eq!(
        stderr,
        format!(
            "message-cli: cannot connect to the message switch at {addr} (Connection refused)\n"
        )
    );

    let stderr = one_line_failure(run(&mut switch.cli(&[
        "call",
        "slow",
        "--body",
        "x",
        "--timeout",
        "0.2",
    ])));
    assert_eq!(stderr, "message-cli: no reply from slow within 200ms\n");

    let stderr = one_line_failure(run(&mut switch.cli(&[
        "call",
        "nope",
        "--body",
        "x",
        "--no-create",
    ])));
    assert_eq!(stderr, "message-cli: queue nope does not exist\n");

    let ran = run(&mut switch.cli(&["ack", "q", "not-a-number"]));
    assert_eq!(ran.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn ack_and_destroy_remove_messages_and_queues() {
    let switch = SwitchProcess::start();
    let queue = QueueName::from("work");
    let (first, second) = block_on(async {
        let mut connection = switch.connection().await;
        connection.create_persistent(&queue).await.expect("create");
        let mut ids = Vec::new();
        for body in ["one", "two"] {
            let id = connection
                .send_request(&queue, &"sink".into(), Bytes::from_static(body.as_bytes()))
                .await
                .expect("send")
                .expect("the queue exists");
            ids.push(id);
        }
        let second = ids.pop().expect("two ids");
        let first = ids.pop().expect("two ids");
        (first, second)
    });
    let first_index = first.index.to_string();
    run_ok(&mut switch.cli(&["ack", "work", &first_index]));
    let remaining = block_on(async {
        let diagnostics = switch
            .connection()
            .await
            .diagnostics()
            .await
            .expect("diagnostics");
        common::find_queue(&diagnostics, &queue)
            .expect("the queue is still there")
            .queue_contents
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>()
    });
    assert_eq!(remaining, [second]);

    run_ok(&mut switch.cli(&["destroy", "work"]));
    assert_eq!(run_ok(&mut switch.cli(&["list", "--all"])), "");
}

#[test]
fn diagnostics_cuts_payloads_unless_verbose() {
    let switch = SwitchProcess::start();
    let long = "x".repeat(100);
    let payload = format!(r#"{{"method":"VM.start","params":["{long}",{{"force":true}}],"id":1}}"#);
    block_on(async {
        let mut connection = switch.connection().await;
        connection
            .create_persistent(&"xenopsd".into())
            .await
            .expect("create");
        connection
            .send_request(
                &"xenopsd".into(),
                &"gone-caller".into(),
                Bytes::from(payload),
            )
            .await
            .expect("send")
            .expect("the queue exists");
    });
    let cut = run_ok(&mut switch.cli(&["diagnostics"]));
    assert!(cut.starts_with("Switch started "), "{cut}");
    assert!(cut.contains("\n      - VM.start\n"), "{cut}");
    assert!(
        cut.contains(&format!("\n        - \"{}\n", &long[..69])),
        "the parameter is cut to 70 bytes: {cut}"
    );
    assert!(cut.contains("\n        - {\"force\":true}\n"), "{cut}");
    assert!(
        cut.contains("\n      - gone-caller appears to have crashed\n"),
        "{cut}"
    );
    assert!(cut.contains("request from: test-harness sent "), "{cut}");

    let full = run_ok(&mut switch.cli(&["diagnostics", "-v"]));
    assert!(
        full.contains(&format!("\n        - \"{long}\"\n")),
        "{full}"
    );
}

#[test]
fn tail_and_mscgen_show_a_round_trip() {
    let switch = SwitchProcess::start();
    let mut follow = spawn(&mut switch.cli(&["tail", "--follow"]));
    let followed = lines_of(&mut follow);
    let _follow = Background::new(follow);
    let _serve = Background::new(spawn(&mut switch.cli(&[
        "serve",
        "echo",
        "--program",
        "/bin/cat",
    ])));
    assert_eq!(
        run_ok(&mut switch.cli(&["call", "echo", "--body", "hi"])),
        "hi\n"
    );

    // The request is acked after the response was sent: wait for that last event.
    let rows = wait_until("the trace holds the ack", || {
        let text = run_ok(&mut switch.cli(&["tail"]));
        text.contains(":ack ").then_some(text)
    });
    let rows: Vec<&str> = rows.lines().collect();
    assert!(rows.len() >= 4, "{rows:#?}");
    assert!(
        rows[0].starts_with("0.0   "),
        "times are relative: {rows:#?}"
    );
    assert!(rows.iter().all(|row| row.ends_with(' ')), "{rows:#?}");
    let request = rows
        .iter()
        .find(|row| row.contains(" ->   echo ") && row.contains(":hi "))
        .expect("the request was traced");
    assert!(request.contains(" echo."), "{request}");
    assert!(rows.iter().any(|row| row.contains(" <-   ")), "{rows:#?}");

    let chart = run_ok(&mut switch.cli(&["mscgen"]));
    assert!(chart.starts_with("msc {\n"), "{chart}");
    assert!(chart.ends_with("\n}\n"), "{chart}");
    assert!(
        chart.contains(r#" => "echo" [ label = "hi" ] ;"#),
        "{chart}"
    );
    assert!(chart.contains(r#""echo" => "#), "{chart}");
    assert!(chart.contains(" << "), "{chart}");

    let seen = read_until(&followed, |line| line.contains(":ack "));
    assert!(seen.iter().any(|row| row.contains(":hi ")), "{seen:#?}");
}

#[test]
fn serve_without_a_program_asks_the_terminal() {
    let switch = SwitchProcess::start();
    let mut serve = switch
        .cli(&["serve", "human"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let mut terminal = serve.stdin.take().expect("piped stdin");
    let shown = lines_of(&mut serve);
    let _serve = Background::new(serve);
    let call = Background::new(spawn(&mut switch.cli(&[
        "call",
        "human",
        "--body",
        "a question",
    ])));
    let prompt = read_until(&shown, |line| line.starts_with("Enter body text"));
    assert_eq!(
        prompt,
        [
            "Received:",
            "a question",
            "Enter body text: (end with a \".\")"
        ]
    );
    terminal
        .write_all(b"first line\nsecond line\n.\n")
        .expect("answer");
    let ran = call.finish();
    assert!(ran.status.success(), "{}", ran.stderr);
    assert_eq!(ran.stdout, "first line\nsecond line\n");
}

#[test]
fn shutdown_stops_the_switch() {
    let mut switch = SwitchProcess::start();
    run_ok(&mut switch.cli(&["shutdown"]));
    assert!(switch.wait_for_exit(), "the switch exits cleanly");
}

#[test]
fn every_command_has_help() {
    for command in [
        "",
        "list",
        "call",
        "serve",
        "diagnostics",
        "tail",
        "mscgen",
        "ack",
        "destroy",
        "shutdown",
    ] {
        let mut cli = Command::new(env!("CARGO_BIN_EXE_message-cli"));
        if !command.is_empty() {
            cli.arg(command);
        }
        let help = run_ok(cli.arg("--help"));
        let name = if command.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{command}")
        };
        snapshot(&name, &help);
    }
}

// Snapshots of the formats, from fixed inputs.

const SECOND: i64 = 1_000_000_000;

fn request(payload: &str, reply_to: &str) -> Message {
    Message {
        payload: Bytes::from(payload.to_owned()),
        kind: MessageKind::Request {
            reply_to: reply_to.into(),
        },
    }
}

fn entry(queue: &str, index: i64, from: &str, time: i64, message: Message) -> (MessageId, Entry) {
    (
        MessageId::new(queue.into(), index),
        Entry {
            origin: Origin::Name(from.into()),
            time,
            message,
        },
    )
}

fn queue(
    name: &str,
    next_transfer_expected: Option<i64>,
    queue_contents: Vec<(MessageId, Entry)>,
) -> (QueueName, QueueDiagnostics) {
    (
        name.into(),
        QueueDiagnostics {
            next_transfer_expected,
            queue_contents,
        },
    )
}

/// A switch up for 1 day, 2 hours, 3 minutes and 4.5 seconds.
fn diagnostics(
    permanent_queues: Vec<(QueueName, QueueDiagnostics)>,
    transient_queues: Vec<(QueueName, QueueDiagnostics)>,
) -> Diagnostics {
    Diagnostics {
        start_time: 0,
        current_time: ((26 * 60 + 3) * 60 + 4) * SECOND + SECOND / 2,
        permanent_queues,
        transient_queues,
    }
}

#[test]
fn diagnostics_snapshots() {
    let now = diagnostics(vec![], vec![]).current_time;
    snapshot(
        "diagnostics_empty",
        &format::diagnostics(&diagnostics(vec![], vec![]), false),
    );

    let running = diagnostics(
        vec![
            queue("idle-service", Some(now + 20 * SECOND), vec![]),
            queue(
                "busy-service",
                Some(now + 25 * SECOND),
                vec![
                    entry(
                        "busy-service",
                        8,
                        "message-cli:42",
                        now - 3 * SECOND,
                        request("second", "message-cli:42"),
                    ),
                    entry(
                        "busy-service",
                        7,
                        "message-cli:42",
                        now - 65 * SECOND,
                        request("first", "message-cli:42"),
                    ),
                ],
            ),
        ],
        vec![queue("message-cli:42", Some(now + 29 * SECOND), vec![])],
    );
    snapshot("diagnostics_running", &format::diagnostics(&running, false));

    let never_started = diagnostics(
        vec![queue(
            "foo",
            None,
            vec![entry(
                "foo",
                0,
                "message-cli:4242",
                now - SECOND / 2,
                request("hello", "message-cli:4242"),
            )],
        )],
        vec![queue("message-cli:4242", Some(now + 30 * SECOND), vec![])],
    );
    snapshot(
        "diagnostics_never_started",
        &format::diagnostics(&never_started, false),
    );

    let crashed = diagnostics(
        vec![
            queue(
                "squeezed",
                Some(now - 3 * 3600 * SECOND),
                vec![
                    entry(
                        "squeezed",
                        12,
                        "xapi:77",
                        now - 2 * 3600 * SECOND,
                        request("balance", "xapi:77"),
                    ),
                    entry(
                        "squeezed",
                        11,
                        "xenopsd:9",
                        now - 3 * 3600 * SECOND - 5 * SECOND,
                        request("reserve\n\"memory\"", "xenopsd:9"),
                    ),
                ],
            ),
            queue("xenopsd", Some(now + 10 * SECOND), vec![]),
        ],
        // xapi's reply queue has not polled for a long time; xenopsd:9 has no reply queue.
        vec![queue("xapi:77", Some(now - 600 * SECOND), vec![])],
    );
    snapshot("diagnostics_crashed", &format::diagnostics(&crashed, false));

    let replies = diagnostics(
        vec![queue(
            "svc",
            Some(now + 5 * SECOND),
            vec![entry(
                "svc",
                3,
                "client:1",
                now - 2 * SECOND,
                request("waiting", "client:1"),
            )],
        )],
        vec![
            // Expected and empty: shown only under its request.
            queue("client:1", Some(now + 5 * SECOND), vec![]),
            // Holding a reply nobody collected.
            queue(
                "client:2",
                Some(now + 5 * SECOND),
                vec![entry(
                    "client:2",
                    0,
                    "svc-server:5",
                    now - 10 * SECOND,
                    Message {
                        payload: Bytes::from_static(b"the answer"),
                        kind: MessageKind::Response {
                            request: MessageId::new("svc".into(), 2),
                        },
                    },
                )],
            ),
            // Empty, and no request names it.
            queue("message-cli:99", Some(now + 30 * SECOND), vec![]),
        ],
    );
    snapshot(
        "diagnostics_reply_queues",
        &format::diagnostics(&replies, false),
    );

    let long = "0123456789".repeat(9);
    let jsonrpc = diagnostics(
        vec![queue(
            "org.xen.xapi.xenops.classic",
            Some(now + 30 * SECOND),
            vec![
                entry(
                    "org.xen.xapi.xenops.classic",
                    5,
                    "xapi:1234",
                    now - 2 * SECOND,
                    request(
                        &format!(
                            r#"{{"method":"VM.start","params":["dbg-{long}","vm-uuid",{{"paused":false,"force":1.5e3}}],"id":17}}"#
                        ),
                        "xapi:1234",
                    ),
                ),
                entry(
                    "org.xen.xapi.xenops.classic",
                    4,
                    "xapi:1234",
                    now - 4 * SECOND,
                    request(&format!("not json: {long}"), "xapi:1234"),
                ),
            ],
        )],
        vec![queue("xapi:1234", Some(now + 30 * SECOND), vec![])],
    );
    snapshot("diagnostics_jsonrpc", &format::diagnostics(&jsonrpc, false));
    snapshot(
        "diagnostics_jsonrpc_verbose",
        &format::diagnostics(&jsonrpc, true),
    );
}

fn event(
    time: f64,
    input: Option<&str>,
    queue: &str,
    output: Option<&str>,
    message: TraceMessage,
    processing_time: Option<i64>,
) -> TraceEvent {
    TraceEvent {
        time,
        input: input.map(Into::into),
        queue: queue.into(),
        output: output.map(Into::into),
        message,
        processing_time,
    }
}

/// A call from message-cli:4242 to `foo`, served by message-cli:77, and a JSON-RPC exchange.
fn trace() -> Vec<(i64, TraceEvent)> {
    let hello = request("hello", "message-cli:4242");
    let response = |payload: &str, to: i64| Message {
        payload: Bytes::from(payload.to_owned()),
        kind: MessageKind::Response {
            request: MessageId::new("foo".into(), to),
        },
    };
    let call = request(
        r#"{"method":"Memory.balance","params":[],"id":3}"#,
        "message-cli:4242",
    );
    let foo_id = |n| MessageId::new("foo".into(), n);
    let cli = |n| MessageId::new("message-cli:4242".into(), n);
    vec![
        (
            0,
            event(
                1700000000.123456,
                Some("message-cli:4242"),
                "foo",
                None,
                TraceMessage::Message(foo_id(0), hello.clone()),
                None,
            ),
        ),
        (
            1,
            event(
                1700000000.5,
                None,
                "foo",
                Some("message-cli:77"),
                TraceMessage::Message(foo_id(0), hello),
                None,
            ),
        ),
        (
            2,
            event(
                1700000000.6,
                Some("message-cli:77"),
                "message-cli:4242",
                None,
                TraceMessage::Message(cli(0), response("hello\nworld", 0)),
                None,
            ),
        ),
        (
            3,
            event(
                1700000000.7,
                None,
                "message-cli:4242",
                Some("message-cli:4242"),
                TraceMessage::Message(cli(0), response("hello\nworld", 0)),
                Some(2_500_000_000),
            ),
        ),
        (
            4,
            event(
                1700000000.75,
                Some("message-cli:77"),
                "foo",
                None,
                TraceMessage::Ack(foo_id(0)),
                None,
            ),
        ),
        (
            5,
            event(
                1700000001.0,
                Some("message-cli:4242"),
                "foo",
                None,
                TraceMessage::Message(foo_id(1), call),
                None,
            ),
        ),
        (
            6,
            event(
                1700000001.5,
                Some("message-cli:77"),
                "message-cli:4242",
                None,
                TraceMessage::Message(
                    cli(1),
                    response(r#"{"result":"ok","error":null,"id":3}"#, 1),
                ),
                None,
            ),
        ),
        (
            7,
            event(
                1700000001.6,
                Some("message-cli:77"),
                "message-cli:4242",
                None,
                TraceMessage::Message(cli(2), response(r#"{"result":null,"error":"E","id":4}"#, 2)),
                None,
            ),
        ),
    ]
}

#[test]
fn tail_snapshot() {
    let events = trace();
    let mut tail = format::Tail::new();
    // Two polls, as with --follow: times stay relative to the very first event printed.
    let mut text = tail.rows(&events[..3]);
    text.push_str(&tail.rows(&events[3..]));
    snapshot("tail", &text);
    assert_eq!(format::next_trace_from(&events, 0), 8);
    assert_eq!(format::next_trace_from(&[], 8), 8);
}

#[test]
fn mscgen_snapshot() {
    snapshot("mscgen", &format::mscgen(&trace()));
    snapshot("mscgen_empty", &format::mscgen(&[]));
}
