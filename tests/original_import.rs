//! The built `message-switch` started on a state directory of the original OCaml switch
//! (the fixtures of tests/fixtures/original-state/, written by the real original; its
//! README says how): every persistent queue and unacked message is served, the original's
//! files are moved aside, a restart does not import again, a damaged state stops the switch
//! with the file named and nothing touched, and `--statedir-import=no` (or the config-file
//! field) leaves the files unread.
//!
//! The rollback (the original started again on the files moved aside) needs the original's
//! binary: `ORIGINAL_SWITCH=/path/to/switch_main.exe cargo test --test original_import --
//! --ignored`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use message_switch::client::{Connection, ConnectionConfig, UnixConnector};
use message_switch::protocol::{MessageId, MessageKind, QueueName};

use common::process::Spawned;
use common::wait_until;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/original-state");

/// The request with odd bytes in the `waiting` fixture.
const ODD: &[u8] = b"\x00nul \"quotes\" (parens) ;semi #| |# \\back\\slash \n\t\r \xff\xfe\x80 invalid utf-8 \xc3\xa9 valid \x7f\x01";

/// A temporary directory with `state/` holding a copy of the `waiting` fixture (its redo-log
/// restored to the original's 1 MiB) and room for the socket.
fn waiting_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let from = Path::new(FIXTURES).join("waiting");
    std::fs::copy(from.join("queues.sexp"), state.join("queues.sexp")).expect("copy");
    std::fs::copy(from.join("redo-log.head"), state.join("redo-log")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(state.join("redo-log"))
        .and_then(|file| file.set_len(1 << 20))
        .expect("restore the redo-log's size");
    dir
}

fn switch(dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_message-switch"));
    command
        .arg("--statedir")
        .arg(dir.join("state"))
        .arg("--path")
        .arg(dir.join("sock"))
        .args(extra)
        .env("RUST_LOG", "info");
    command
}

async fn connect(socket: &Path) -> Connection {
    let connector = UnixConnector::new(socket);
    let mut connection = Connection::open(&connector, &ConnectionConfig::default())
        .await
        .expect("connect");
    connection.login(&"checker:1".into()).await.expect("login");
    connection
}

fn name(text: &str) -> QueueName {
    QueueName::new(text)
}

/// `(id, payload, kind)` of every message waiting in `queue`, as a Transfer shows them.
async fn waiting(connection: &mut Connection, queue: &str) -> Vec<(i64, Bytes, MessageKind)> {
    let reply = connection
        .transfer(None, Duration::ZERO, &[name(queue)])
        .await
        .expect("transfer");
    reply
        .messages
        .into_iter()
        .map(|(id, message)| {
            assert_eq!(id.queue, name(queue));
            (id.index, message.payload, message.kind)
        })
        .collect()
}

fn request() -> MessageKind {
    MessageKind::Request {
        reply_to: name("caller:7"),
    }
}

fn imported_dirs(state: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(state)
        .expect("list")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            path.is_dir()
                && path
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with("imported-"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_switch_imports_the_originals_state_once_and_serves_it() {
    let dir = waiting_fixture();
    let state = dir.path().join("state");
    let mut first = Spawned::start(&mut switch(dir.path(), &[]));
    let lines = first.lines_through("listening on unix ");
    let line = |text: &str| {
        let found = lines.iter().find(|line| line.contains(text));
        found
            .unwrap_or_else(|| panic!("a line with {text:?} in {lines:#?}"))
            .clone()
    };
    let skipped = line("skipped a transient queue");
    assert!(
        skipped.contains("queue=caller:7") && skipped.contains("messages=1"),
        "{skipped}"
    );
    let imported = line("imported the original message-switch's state");
    for field in [
        "queues=4",
        "messages=5",
        "payload_bytes=136",
        "replayed_redo_log_operations=8",
    ] {
        assert!(imported.contains(field), "{field} in {imported}");
    }
    line("recovered 4 queues and 5 messages");

    let mut connection = connect(&dir.path().join("sock")).await;
    assert_eq!(
        waiting(&mut connection, "org.xen.xapi.test").await,
        [
            (2, Bytes::from_static(ODD), request()),
            (3, Bytes::from_static(b"request-3"), request()),
            (
                4,
                Bytes::from_static(b"request-4 (redo-log only)"),
                request()
            ),
        ]
    );
    assert_eq!(
        waiting(&mut connection, "replies").await,
        [(
            1,
            Bytes::from_static(b"response-to-3 \x00\xff"),
            MessageKind::Response {
                request: MessageId::new(name("org.xen.xapi.test"), 3)
            }
        )]
    );
    assert_eq!(
        waiting(&mut connection, "late").await,
        [(0, Bytes::from_static(b"late-0"), request())]
    );
    let mut queues = connection.list(&name(""), false).await.expect("list");
    queues.retain(|queue| queue != &name("checker:1"));
    queues.sort();
    assert_eq!(
        queues,
        ["empty-queue", "late", "org.xen.xapi.test", "replies"].map(name)
    );
    // A listener acks an imported request by the id the original gave it; a new request
    // gets an id above every imported one.
    connection
        .ack(&MessageId::new(name("org.xen.xapi.test"), 3))
        .await
        .expect("ack");
    let new = connection
        .send_request(
            &name("org.xen.xapi.test"),
            &name("caller:7"),
            Bytes::from_static(b"new"),
        )
        .await
        .expect("send")
        .expect("the queue exists");
    assert!(new.index > 4, "{new:?}");

    // The original's files are aside, whole; nothing of them is left in the directory.
    let [aside] = &imported_dirs(&state)[..] else {
        panic!("one imported-* directory in {}", state.display());
    };
    assert_eq!(
        std::fs::read(aside.join("queues.sexp")).expect("read"),
        std::fs::read(Path::new(FIXTURES).join("waiting/queues.sexp")).expect("read")
    );
    assert_eq!(
        std::fs::metadata(aside.join("redo-log"))
            .expect("stat")
            .len(),
        1 << 20
    );
    assert!(!state.join("queues.sexp").exists() && !state.join("redo-log").exists());

    drop(connection);
    first.terminate();
    let (success, _) = first.wait();
    assert!(success, "a clean stop");

    // A second start recovers the journal and imports nothing.
    let mut second = Spawned::start(&mut switch(dir.path(), &[]));
    let lines = second.lines_through("listening on unix ");
    assert!(
        !lines
            .iter()
            .any(|line| line.contains("imported the original")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("recovered 4 queues and 5 messages")),
        "4 imported + 1 new − 1 acked: {lines:#?}"
    );
    let mut connection = connect(&dir.path().join("sock")).await;
    let ids: Vec<i64> = waiting(&mut connection, "org.xen.xapi.test")
        .await
        .into_iter()
        .map(|(id, ..)| id)
        .collect();
    assert_eq!(ids, [2, 4, new.index]);
    assert_eq!(imported_dirs(&state).len(), 1);
    second.terminate();
    assert!(second.wait().0);
}

/// Runs `command` until it exits (killed, and the test failed, if it does not within the
/// deadline): whether it succeeded, and its stderr.
fn run_to_exit(command: &mut Command) -> (bool, String) {
    let mut spawned = Spawned::start(command);
    let (success, mut lines) = spawned.wait();
    // The rest of its stderr, up to the end of the stream.
    lines.extend(spawned.stderr.iter());
    (success, lines.join("\n"))
}

/// The name and bytes of every file in `dir`.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read"))
        })
        .collect();
    files.sort();
    files
}

/// A file of the original's state, a way to damage it, and what the error must say.
type Damage = (&'static str, fn(&mut Vec<u8>), &'static str);

#[test]
fn a_damaged_original_state_stops_the_switch_and_is_left_untouched() {
    let cases: [Damage; 3] = [
        (
            "queues.sexp",
            |bytes| bytes.truncate(600),
            "unbalanced parentheses",
        ),
        (
            "redo-log",
            |bytes| bytes.truncate(700_000),
            "not a whole number of 512-byte sectors",
        ),
        (
            "redo-log",
            |bytes| bytes[2497] ^= 0x01,
            "the operation at byte offset 2492",
        ),
    ];
    for (file, damage, reason) in cases {
        let dir = waiting_fixture();
        let state = dir.path().join("state");
        let path = state.join(file);
        let mut bytes = std::fs::read(&path).expect("read");
        damage(&mut bytes);
        std::fs::write(&path, &bytes).expect("write");
        let before = contents(&state);
        let (success, stderr) = run_to_exit(&mut switch(dir.path(), &[]));
        assert!(!success, "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(stderr.contains(reason), "{reason} in {stderr}");
        assert!(stderr.contains("the files are untouched"), "{stderr}");
        assert!(
            !stderr.contains("listening on"),
            "it never serves: {stderr}"
        );
        let mut after = contents(&state);
        after.retain(|(name, _)| name != "LOCK");
        assert_eq!(after, before, "{file}: the directory is as it was");
        assert!(imported_dirs(&state).is_empty());
    }
}

#[test]
fn statedir_import_no_leaves_the_files_unread_also_from_the_config_file() {
    let dir = waiting_fixture();
    let config = dir.path().join("message-switch.conf");
    std::fs::write(&config, "((statedir_import no))").expect("write");
    let mut started = Spawned::start(
        switch(dir.path(), &[])
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn"),
    );
    let lines = started.lines_through("listening on unix ");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("left unread (--statedir-import=no)")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|line| line.contains("recovered 0 queues")),
        "{lines:#?}"
    );
    started.terminate();
    assert!(started.wait().0);

    // Now both states are there: the default refuses to guess, naming both.
    let (success, stderr) = run_to_exit(&mut switch(dir.path(), &[]));
    assert!(!success, "{stderr}");
    let state = dir.path().join("state");
    assert!(
        stderr.contains(&state.join("queues.sexp").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains("journal-00000000000000000001.log"),
        "{stderr}"
    );
    assert!(stderr.contains("refusing to guess"), "{stderr}");
    // The flag on the command line does the same as the field.
    let mut again = Spawned::start(&mut switch(dir.path(), &["--statedir-import", "no"]));
    again.line_starting("listening on unix ");
    again.terminate();
    assert!(again.wait().0);
}

/// After an import, the files moved back and the original started on them: it serves the
/// state it had before the upgrade (what docs/deploy.md's rollback relies on).
#[test]
#[ignore = "needs the original switch: ORIGINAL_SWITCH=/path/to/switch_main.exe"]
fn rollback_the_original_starts_on_the_files_moved_aside() {
    let original = std::env::var("ORIGINAL_SWITCH").expect("ORIGINAL_SWITCH names the binary");
    let dir = waiting_fixture();
    let state = dir.path().join("state");
    let mut ours = Spawned::start(&mut switch(dir.path(), &[]));
    ours.line_starting("listening on unix ");
    ours.terminate();
    assert!(ours.wait().0);

    // The rollback, as docs/deploy.md says: stop ours, move the files back, start the
    // original on the same directory.
    let [aside] = &imported_dirs(&state)[..] else {
        panic!("one imported-* directory");
    };
    for file in ["queues.sexp", "redo-log"] {
        std::fs::rename(aside.join(file), state.join(file)).expect("move back");
    }
    let socket = dir.path().join("original.sock");
    let child = Command::new(original)
        .arg("--path")
        .arg(&socket)
        .arg("--statedir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the original starts");
    let _original = Spawned::adopt(child);
    wait_until("the original listens", || socket.exists().then_some(()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut connection = connect(&socket).await;
        let mut ids: Vec<i64> = waiting(&mut connection, "org.xen.xapi.test")
            .await
            .into_iter()
            .map(|(id, ..)| id)
            .collect();
        // The original returns a queue's messages newest first.
        ids.sort();
        assert_eq!(ids, [2, 3, 4]);
    });
}
