//! The import against state directories written by the real original switch
//! (tests/fixtures/original-state/README.md says how each was made), and against damaged
//! copies of them.

use std::path::Path;

use bytes::Bytes;

use super::*;
use crate::engine::QueueStore;
use crate::protocol::{MessageId, MessageKind, QueueName};
use crate::store::{open_dir, Options};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/original-state");

/// The original's default redo-log size; the `waiting` fixture keeps only its first sectors
/// (the rest of the file is zeros).
const REDO_LOG_BYTES: u64 = 1 << 20;

/// A state directory holding a copy of fixture `name`.
fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let from = Path::new(FIXTURES).join(name);
    std::fs::copy(
        from.join(ORIGINAL_SNAPSHOT),
        dir.path().join(ORIGINAL_SNAPSHOT),
    )
    .expect("copy queues.sexp");
    let redo_log = dir.path().join(ORIGINAL_REDO_LOG);
    if from.join("redo-log.head").exists() {
        std::fs::copy(from.join("redo-log.head"), &redo_log).expect("copy redo-log.head");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&redo_log)
            .and_then(|file| file.set_len(REDO_LOG_BYTES))
            .expect("restore the redo-log's size");
    } else {
        std::fs::copy(from.join(ORIGINAL_REDO_LOG), &redo_log).expect("copy redo-log");
    }
    dir
}

fn name(text: &str) -> QueueName {
    QueueName::new(text)
}

/// `(id, payload, kind)` of every message of queue `queue`, ascending by id.
fn messages(store: &QueueStore, queue: &str) -> Vec<(i64, Bytes, MessageKind)> {
    store
        .queue(&name(queue))
        .unwrap_or_else(|| panic!("queue {queue} imported"))
        .messages
        .iter()
        .map(|(id, stored)| {
            (
                *id,
                stored.message.payload.clone(),
                stored.message.kind.clone(),
            )
        })
        .collect()
}

fn request(reply_to: &str) -> MessageKind {
    MessageKind::Request {
        reply_to: name(reply_to),
    }
}

fn response(queue: &str, index: i64) -> MessageKind {
    MessageKind::Response {
        request: MessageId::new(name(queue), index),
    }
}

/// The file names in `dir` (not the subdirectories).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("an entry"))
        .filter(|entry| entry.file_type().expect("a type").is_file())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The `imported-*` directories in `dir`.
fn imported_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.is_dir())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("imported-"))
        })
        .collect()
}

/// Opens `dir` as the switch does, and stops the journal again.
fn open(dir: &Path, options: &Options) -> Result<QueueStore, StoreError> {
    let mut opened = open_dir(dir, options)?;
    opened.journal.close();
    while let Some(completion) = block_on(opened.journal.completion()) {
        if matches!(completion, crate::store::Completion::Closed(_)) {
            break;
        }
    }
    Ok(opened.store)
}

/// Runs `future` to completion on a small runtime of its own.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(future)
}

#[test]
fn waiting_requests_responses_and_odd_bytes_are_imported_with_their_ids() {
    let dir = fixture("waiting");
    let store = open(dir.path(), &Options::default()).expect("the import");
    let odd: &[u8] = b"\x00nul \"quotes\" (parens) ;semi #| |# \\back\\slash \n\t\r \xff\xfe\x80 invalid utf-8 \xc3\xa9 valid \x7f\x01";
    assert_eq!(
        messages(&store, "org.xen.xapi.test"),
        [
            (2, Bytes::from_static(odd), request("caller:7")),
            (3, Bytes::from_static(b"request-3"), request("caller:7")),
            (
                4,
                Bytes::from_static(b"request-4 (redo-log only)"),
                request("caller:7")
            ),
        ],
        "request-0 and request-1 were acked (1 in the snapshot, 0 in the redo-log)"
    );
    assert_eq!(
        messages(&store, "replies"),
        [(
            1,
            Bytes::from_static(b"response-to-3 \x00\xff"),
            response("org.xen.xapi.test", 3)
        )]
    );
    assert_eq!(
        messages(&store, "late"),
        [(0, Bytes::from_static(b"late-0"), request("caller:7"))],
        "a queue created and sent to only in the redo-log"
    );
    assert!(messages(&store, "empty-queue").is_empty());
    assert!(
        store.queue(&name("doomed")).is_none(),
        "destroyed in the redo-log"
    );
    assert!(
        store.queue(&name("caller:7")).is_none(),
        "the original's transient queue is dropped"
    );
    assert_eq!(store.queue_count(), 4);
    assert!(
        store.next_index() > 4,
        "new ids stay above the imported ones"
    );

    // The original's files are moved aside whole; a second start imports nothing again.
    let [aside] = &imported_dirs(dir.path())[..] else {
        panic!("one imported-* directory");
    };
    assert_eq!(files(aside), [ORIGINAL_SNAPSHOT, ORIGINAL_REDO_LOG]);
    assert_eq!(
        std::fs::read(aside.join(ORIGINAL_SNAPSHOT)).expect("read"),
        std::fs::read(Path::new(FIXTURES).join("waiting").join(ORIGINAL_SNAPSHOT)).expect("read")
    );
    assert!(!files(dir.path())
        .iter()
        .any(|file| file == ORIGINAL_SNAPSHOT));
    let again = open(dir.path(), &Options::default()).expect("a second start");
    assert_eq!(
        messages(&again, "org.xen.xapi.test"),
        messages(&store, "org.xen.xapi.test")
    );
    assert_eq!(again.message_count(), store.message_count());
    assert_eq!(imported_dirs(dir.path()).len(), 1);
}

#[test]
fn a_wrapped_redo_log_is_replayed_across_its_end() {
    let dir = fixture("wrapped");
    let store = open(dir.path(), &Options::default()).expect("the import");
    let bulk = messages(&store, "bulk");
    assert_eq!(
        bulk.iter().map(|(id, ..)| *id).collect::<Vec<_>>(),
        [24, 25, 27, 28, 29, 30],
        "24–26 from the snapshot, 27–30 and the ack of 26 from the wrapped redo-log"
    );
    for (id, payload, kind) in bulk {
        let mut expected = format!("bulk-{id:03}-").into_bytes();
        expected.extend_from_slice(&[b'x'; 900]);
        assert_eq!(payload, expected);
        assert_eq!(kind, request("caller:9"));
    }
}

#[test]
fn the_fixtures_redo_log_really_wraps() {
    let file = std::fs::read(Path::new(FIXTURES).join("wrapped/redo-log")).expect("read");
    let items = ring::unconsumed_items(&file).expect("a valid ring");
    let capacity = (file.len() - 3 * 512) as u64;
    let first = items.first().expect("items").position;
    let last = items.last().expect("items");
    let end = last.position + 4 + last.bytes.len() as u64;
    assert!(
        first / capacity < (end - 1) / capacity,
        "{first}..{end} crosses the end"
    );
}

/// Damages a copy of the `waiting` fixture, and checks that the start-up is refused with
/// the file and the reason, and that nothing in the directory changed.
fn refused(damage: impl FnOnce(&Path), file: &str, reason: &str) {
    let dir = fixture("waiting");
    damage(dir.path());
    let before: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.path().join(&name)).expect("read");
            (name, bytes)
        })
        .collect();
    let error = open(dir.path(), &Options::default()).expect_err(reason);
    let message = error.to_string();
    assert!(
        matches!(error, StoreError::OriginalState { .. }),
        "{message}"
    );
    assert!(
        message.contains(&dir.path().join(file).display().to_string()),
        "{message}"
    );
    assert!(message.contains(reason), "{message}");
    assert!(message.contains("the files are untouched"), "{message}");
    let after: Vec<(String, Vec<u8>)> = files(dir.path())
        .into_iter()
        .filter(|name| name != crate::store::LOCK_FILE)
        .map(|name| {
            let bytes = std::fs::read(dir.path().join(&name)).expect("read");
            (name, bytes)
        })
        .collect();
    assert_eq!(
        after, before,
        "the directory is as it was (but for our lock file)"
    );
    assert!(imported_dirs(dir.path()).is_empty());
}

fn edit(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).expect("read");
    change(&mut bytes);
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_truncated_snapshot_is_refused() {
    refused(
        |dir| edit(&dir.join(ORIGINAL_SNAPSHOT), |bytes| bytes.truncate(700)),
        ORIGINAL_SNAPSHOT,
        "unbalanced parentheses",
    );
}

#[test]
fn a_snapshot_with_a_flipped_byte_is_refused() {
    // (bytes found in queues.sexp, which of them is flipped, to what, what the error says)
    let flips: [(&[u8], usize, u8, &str); 2] = [
        // A queue's `q` field becomes `Q`: the field is missing.
        (
            b"(empty-queue((q(",
            14,
            b'Q',
            "queue empty-queue has no field q",
        ),
        // A message id becomes a letter.
        (
            b"(3((origin",
            1,
            b'x',
            "expected a message id (an int64), found \"x\"",
        ),
    ];
    for (needle, offset, byte, reason) in flips {
        refused(
            |dir| {
                edit(&dir.join(ORIGINAL_SNAPSHOT), |bytes| {
                    let at = find(bytes, needle);
                    bytes[at + offset] = byte;
                })
            },
            ORIGINAL_SNAPSHOT,
            reason,
        );
    }
}

#[test]
fn a_snapshot_that_is_not_text_or_empty_is_refused() {
    refused(
        |dir| edit(&dir.join(ORIGINAL_SNAPSHOT), |bytes| bytes[10] = 0xff),
        ORIGINAL_SNAPSHOT,
        "byte 10 is not text",
    );
    refused(
        |dir| edit(&dir.join(ORIGINAL_SNAPSHOT), Vec::clear),
        ORIGINAL_SNAPSHOT,
        "empty: no s-expression",
    );
}

#[test]
fn a_damaged_redo_log_is_refused() {
    refused(
        |dir| edit(&dir.join(ORIGINAL_REDO_LOG), |bytes| bytes.truncate(1000)),
        ORIGINAL_REDO_LOG,
        "not a whole number of 512-byte sectors",
    );
    refused(
        |dir| edit(&dir.join(ORIGINAL_REDO_LOG), |bytes| bytes[5] = b'X'),
        ORIGINAL_REDO_LOG,
        "no shared-block-ring signature",
    );
    // Inside the first unconsumed operation, "(Send(Name caller:7)…" loses its "(".
    refused(
        |dir| {
            edit(&dir.join(ORIGINAL_REDO_LOG), |bytes| {
                let at = find(bytes, b"(Send(Name caller:7)org.xen.xapi.test 4");
                bytes[at] = b' ';
            })
        },
        ORIGINAL_REDO_LOG,
        "the operation at byte offset 2492 (ring position 956): line 1, column 102: \
         unbalanced parentheses",
    );
    // The length of the last operation (Remove doomed) grows past the producer.
    refused(
        |dir| {
            edit(&dir.join(ORIGINAL_REDO_LOG), |bytes| {
                let at = find(bytes, b"(Directory(Remove doomed))");
                bytes[at - 4] = 200;
            })
        },
        ORIGINAL_REDO_LOG,
        "claims 200 bytes, past the producer position 1364",
    );
}

#[test]
fn a_redo_log_without_its_snapshot_is_refused() {
    refused(
        |dir| std::fs::remove_file(dir.join(ORIGINAL_SNAPSHOT)).expect("remove"),
        ORIGINAL_SNAPSHOT,
        "missing while redo-log is present",
    );
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
        .expect("the bytes are in the fixture")
}

#[test]
fn the_original_beside_our_own_journal_is_refused_unless_import_is_off() {
    let dir = fixture("waiting");
    // Our own journal, from a start that left the original's files unread.
    let no = Options {
        original_import: OriginalImport::No,
        ..Options::default()
    };
    let store = open(dir.path(), &no).expect("a start with the import off");
    assert_eq!(store.queue_count(), 0);
    let error = open(dir.path(), &Options::default()).expect_err("both states");
    let message = error.to_string();
    assert!(
        matches!(error, StoreError::OriginalBesideJournal { .. }),
        "{message}"
    );
    assert!(message.contains(&dir.path().join(ORIGINAL_SNAPSHOT).display().to_string()));
    assert!(
        message.contains("journal-00000000000000000001.log"),
        "{message}"
    );
    assert!(open(dir.path(), &no).is_ok());
    assert!(files(dir.path())
        .iter()
        .any(|file| file == ORIGINAL_SNAPSHOT));
}

/// What an import cut short leaves: the original's files untouched, the marker, and
/// `ours` (file names and contents) of this switch's.
fn cut_short(ours: &[(&str, Vec<u8>)]) -> tempfile::TempDir {
    let dir = fixture("waiting");
    std::fs::write(dir.path().join(IMPORT_PENDING), b"").expect("write the marker");
    for (name, bytes) in ours {
        std::fs::write(dir.path().join(name), bytes).expect("write");
    }
    dir
}

#[test]
fn an_import_cut_short_after_its_snapshot_is_finished() {
    // A complete import's own files, taken from a real import.
    let done = fixture("waiting");
    open(done.path(), &Options::default()).expect("the import");
    let journal = "journal-00000000000000000001.log";
    let snapshot = "snapshot-00000000000000000001.snap";
    let read = |name| std::fs::read(done.path().join(name)).expect("read");
    let dir = cut_short(&[(journal, read(journal)), (snapshot, read(snapshot))]);
    let store = open(dir.path(), &Options::default()).expect("finishing the import");
    assert_eq!(store.message_count(), 5);
    assert_eq!(imported_dirs(dir.path()).len(), 1);
    let left = files(dir.path());
    assert!(!left
        .iter()
        .any(|file| file == ORIGINAL_SNAPSHOT || file == IMPORT_PENDING));
}

#[test]
fn an_import_cut_short_before_its_snapshot_starts_again() {
    let dir = cut_short(&[
        ("journal-00000000000000000001.log", b"MSWITCH\0".to_vec()),
        (
            "snapshot-00000000000000000001.snap.tmp",
            b"half a snap".to_vec(),
        ),
    ]);
    let store = open(dir.path(), &Options::default()).expect("the import, again");
    assert_eq!(store.message_count(), 5);
    assert_eq!(imported_dirs(dir.path()).len(), 1);
    assert!(!files(dir.path()).iter().any(|file| file == IMPORT_PENDING));
}

#[test]
fn a_marker_left_after_the_move_is_removed() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join(IMPORT_PENDING), b"").expect("write the marker");
    open(dir.path(), &Options::default()).expect("a start");
    assert!(!files(dir.path()).iter().any(|file| file == IMPORT_PENDING));
}

#[test]
fn utc_stamps() {
    let at = |seconds| utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds));
    assert_eq!(at(0), "19700101T000000Z");
    assert_eq!(at(951_782_400), "20000229T000000Z");
    assert_eq!(at(1_796_584_505), "20261206T191505Z");
}
