//! The fuzz targets' logic, shared by the libFuzzer crate in this directory (one binary per
//! target, `fuzz_targets/*.rs`) and by `tests/fuzz_pass.rs`, which runs every target over the
//! corpus and some thousands of generated inputs in each `cargo test`.
//!
//! Each function takes arbitrary bytes and must return without panicking, in time roughly
//! linear in the input. Where the code has a checkable contract (a round trip, recovery of
//! an intact prefix) the target asserts it too, so a wrong answer is a finding like a panic.

use bytes::Bytes;

use message_switch::engine::{Event, Timestamp};
use message_switch::protocol::json;
use message_switch::protocol::{
    decode_list, decode_segment, decode_sent, decode_trace, encode_segment, Diagnostics, Message,
    MessageId, MessageKind, Origin, QueueName, Request, SessionToken, TransferReply,
    TransferRequest,
};
use message_switch::store::fuzzing;

/// The names of the targets, as the fuzz crate's binaries and the corpus folders are named.
pub const TARGETS: &[&str] = &["route", "json", "journal", "config"];

/// Runs the target called `name` on `data`. Panics on an unknown name.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "route" => route(data),
        "json" => json(data),
        "journal" => journal(data),
        "config" => config(data),
        other => panic!("no fuzz target called {other}"),
    }
}

/// The request router and path decoding: the first byte picks the method, the bytes up to
/// the first newline are the path, the rest is the body.
///
/// Checks: routing never panics; a routed request rebuilt by the client (`to_http`) routes
/// back to the same request; percent-encoding a segment and decoding it gives the bytes back.
pub fn route(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let method = ["GET", "POST", "PUT", "HEAD", "get", ""][usize::from(selector % 6)];
    let (path, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let encoded = encode_segment(path);
    assert_eq!(
        decode_segment(encoded.as_bytes()),
        path,
        "segment round trip"
    );
    let _ = decode_segment(path);
    let path = String::from_utf8_lossy(path);
    let Ok(request) = Request::route(method, &path, Bytes::copy_from_slice(body)) else {
        return;
    };
    // Web paths are kept raw and Trace timeouts are printed as floats: neither is meant to be
    // rebuilt byte for byte.
    if matches!(request, Request::Web(_) | Request::Trace { .. }) {
        return;
    }
    let http = request.to_http();
    let again = Request::route(http.method, &http.path, http.body.clone());
    assert_eq!(again.as_ref(), Ok(&request), "re-routing {http:?}");
}

/// The JSON reader, the Transfer body and the client's reply decoders.
///
/// Checks: nothing panics (depth is bounded); a parsed document printed and parsed again
/// prints the same; a parsed Transfer body encoded and parsed again is the same request.
pub fn json(data: &[u8]) {
    if let Ok(value) = json::parse(data) {
        let mut printed = Vec::new();
        json::write_value(&mut printed, &value);
        let reparsed = json::parse(&printed).expect("printed JSON parses");
        let mut again = Vec::new();
        json::write_value(&mut again, &reparsed);
        assert_eq!(printed, again, "print, parse, print is stable");
    }
    if let Ok(transfer) = TransferRequest::parse(data) {
        let encoded = transfer.encode();
        let reparsed = TransferRequest::parse(&encoded).expect("an encoded Transfer parses");
        // NaN timeouts compare unequal to themselves: compare the encodings instead.
        assert_eq!(reparsed.encode(), encoded, "Transfer round trip");
    }
    let _ = TransferReply::decode(data);
    let _ = Diagnostics::decode(data);
    let _ = decode_sent(data);
    let _ = decode_list(data);
    let _ = decode_trace(data);
}

/// The journal and snapshot readers. The first byte picks a mode:
///
/// - 0: the bytes are one journal segment as found on disk (and, split at the second byte,
///   a snapshot and the segment after it);
/// - 1: the bytes are record payloads (`[seq step][length][payload]…`), framed with valid
///   checksums into a journal segment, so that they reach the event decoder;
/// - 2: the same into a snapshot;
/// - otherwise: a valid journal generated from the bytes, then cut at an offset the bytes
///   choose: recovery must succeed with exactly the records before the cut.
///
/// Every damaged input is read with and without salvage; both must return, not panic.
pub fn journal(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => raw_files(rest),
        1 => {
            let mut segment = fuzzing::journal_header(1);
            frame_records(&mut segment, rest, 1);
            recover_both(&[(fuzzing::journal_file_name(1), segment)]);
        }
        2 => {
            let mut snapshot = fuzzing::snapshot_header(1);
            frame_records(&mut snapshot, rest, 1);
            recover_both(&[
                (fuzzing::snapshot_file_name(1), snapshot),
                (fuzzing::journal_file_name(1), fuzzing::journal_header(1)),
            ]);
        }
        _ => intact_prefix(rest),
    }
}

fn raw_files(data: &[u8]) {
    recover_both(&[(fuzzing::journal_file_name(1), data.to_vec())]);
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (snapshot, journal) = rest.split_at(at);
    recover_both(&[
        (fuzzing::snapshot_file_name(3), snapshot.to_vec()),
        (fuzzing::journal_file_name(3), journal.to_vec()),
        (fuzzing::journal_file_name(4), journal.to_vec()),
    ]);
}

/// Appends one record per `[seq step][length][payload]` chunk of `data` to `out`.
fn frame_records(out: &mut Vec<u8>, mut data: &[u8], mut seq: u64) {
    while let [step, length, rest @ ..] = data {
        let length = usize::from(*length).min(rest.len());
        let (payload, after) = rest.split_at(length);
        // Step 0 is the next record in order; others are gaps and repeats.
        seq = seq.wrapping_add(u64::from(*step)).wrapping_sub(1);
        fuzzing::append_record(out, seq, payload);
        seq = seq.wrapping_add(1);
        data = after;
    }
}

fn recover_both(files: &[(String, Vec<u8>)]) {
    let strict = fuzzing::recover_files(files, false);
    let salvaged = fuzzing::recover_files(files, true);
    // Salvage only ever relaxes recovery: whatever strict recovery accepts, it accepts too.
    if strict.is_ok() {
        assert!(
            salvaged.is_ok(),
            "salvage refused what strict recovery took"
        );
    }
}

/// A journal of valid records generated from `data`, cut at an offset `data` picks: the
/// records wholly before the cut are recovered, the rest is a torn tail.
fn intact_prefix(data: &[u8]) {
    let Some((cut, events)) = data.split_first_chunk::<2>() else {
        return;
    };
    let mut segment = fuzzing::journal_header(1);
    let mut ends = Vec::new();
    for (index, chunk) in events.chunks(4).enumerate() {
        let batch: Vec<Event> = chunk.iter().map(|&b| event(b)).collect();
        let payload = fuzzing::batch_payload(i64::from(chunk[0]), &batch).expect("small events");
        assert!(fuzzing::append_record(
            &mut segment,
            index as u64 + 1,
            &payload
        ));
        ends.push(segment.len());
    }
    let cut = usize::from(u16::from_le_bytes(*cut)).min(segment.len());
    segment.truncate(cut);
    let expected = ends.iter().filter(|&&end| end <= cut).count() as u64;
    let report = fuzzing::recover_files(&[(fuzzing::journal_file_name(1), segment)], false)
        .expect("a cut journal recovers");
    assert_eq!(report.journal_records, expected, "records before the cut");
}

/// One of a few events on a few queues, picked by `b`.
fn event(b: u8) -> Event {
    let queue = QueueName::new(vec![b'q', b'0' + b % 3]);
    let id = MessageId::new(queue.clone(), i64::from(b >> 2));
    match b % 4 {
        0 => Event::QueueCreated {
            name: queue,
            owner: (b & 16 != 0).then(|| SessionToken::new(&b"session"[..])),
        },
        1 => Event::QueueRemoved { name: queue },
        2 => Event::MessageStored {
            id: id.clone(),
            origin: Origin::Anonymous(i64::from(b)),
            time: Timestamp::from_unix_nanos(i64::from(b)),
            message: Message {
                payload: Bytes::from(vec![b; usize::from(b % 7)]),
                kind: MessageKind::Request {
                    reply_to: id.queue.clone(),
                },
            },
        },
        _ => Event::MessageAcked { id },
    }
}

/// The config-file reader (`message-switch --config FILE`): the s-expression reader and the
/// mapping of fields to `message-switch`'s options, on arbitrary text.
///
/// Checks: reading never panics; every error names the file; a file that is accepted gives
/// arguments whose values the switch's own command line accepts, so that the only errors
/// left for the real parse are relations between options (e.g. `--salvage` without
/// `--statedir`), never a bad value.
pub fn config(data: &[u8]) {
    use std::ffi::OsString;
    use std::path::Path;

    use clap::error::ErrorKind;
    use clap::Parser;
    use message_switch::cli::switch::{command, Args, CONFIG_ID};

    let text = String::from_utf8_lossy(data);
    let file = Path::new("fuzz.conf");
    let argv: Vec<OsString> = ["message-switch", "--config", "fuzz.conf"]
        .into_iter()
        .map(OsString::from)
        .collect();
    match message_switch::config::merge_text(&command(), CONFIG_ID, argv, file, &text) {
        Err(error) => assert!(
            error.to_string().contains("fuzz.conf"),
            "an error that does not name the file: {error}"
        ),
        Ok(arguments) => {
            if let Err(error) = Args::try_parse_from(&arguments) {
                assert!(
                    matches!(
                        error.kind(),
                        ErrorKind::ArgumentConflict | ErrorKind::MissingRequiredArgument
                    ),
                    "accepted fields the command line refuses: {arguments:?}: {error}"
                );
            }
        }
    }
}
