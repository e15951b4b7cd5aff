//! Property tests of the wire format: arbitrary byte payloads survive encode → decode and a
//! real send → transfer exactly, the string escaping follows Yojson's rules byte by byte, and
//! no input whatsoever makes the router or the JSON reader panic.

use bytes::Bytes;
use proptest::prelude::*;

use message_switch::protocol::json::{self, Value};

mod common;
use message_switch::protocol::{
    Message, MessageId, MessageKind, Request, TransferReply, TransferRequest,
};

/// What Yojson prints for one byte inside a string.
fn yojson_escape(byte: u8) -> Vec<u8> {
    match byte {
        b'"' => b"\\\"".to_vec(),
        b'\\' => b"\\\\".to_vec(),
        0x08 => b"\\b".to_vec(),
        0x0c => b"\\f".to_vec(),
        b'\n' => b"\\n".to_vec(),
        b'\r' => b"\\r".to_vec(),
        b'\t' => b"\\t".to_vec(),
        0x00..=0x1f | 0x7f => format!("\\u{byte:04x}").into_bytes(),
        _ => vec![byte],
    }
}

/// What Yojson prints for `bytes` as a string literal.
fn yojson_string(bytes: &[u8]) -> Vec<u8> {
    let mut expected = vec![b'"'];
    for &byte in bytes {
        expected.extend(yojson_escape(byte));
    }
    expected.push(b'"');
    expected
}

proptest! {
    #![proptest_config(common::proptest_config(1000))]

    #[test]
    fn string_escaping_is_yojsons_byte_by_byte(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut written = Vec::new();
        json::write_string(&mut written, &bytes);
        prop_assert_eq!(&written, &yojson_string(&bytes));
        prop_assert_eq!(json::parse(&written), Ok(Value::String(bytes)));
    }

    /// Mostly plain text with a rare byte that needs escaping, anywhere: the writer skips
    /// plain bytes eight at a time, and must still see every one that is not.
    #[test]
    fn sparse_escapes_in_plain_text_are_all_found(
        bytes in proptest::collection::vec(
            prop_oneof![20 => b'a'..=b'z', 1 => any::<u8>(), 1 => prop_oneof![
                Just(b'"'), Just(b'\\'), Just(0x7f), Just(0x1f), Just(0x00), Just(0x80), Just(0xff),
            ]],
            0..120,
        )
    ) {
        let mut written = Vec::new();
        json::write_string(&mut written, &bytes);
        prop_assert_eq!(&written, &yojson_string(&bytes));
    }

    #[test]
    fn arbitrary_payloads_survive_a_transfer_reply(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..5),
        names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 1..3),
        next in any::<i64>(),
    ) {
        let messages: Vec<(MessageId, Message)> = payloads
            .into_iter()
            .enumerate()
            .map(|(index, payload)| {
                let name = names[index % names.len()].clone();
                (
                    MessageId::new(name.clone().into(), index as i64),
                    Message {
                        payload: Bytes::from(payload),
                        kind: if index % 2 == 0 {
                            MessageKind::Request { reply_to: name.into() }
                        } else {
                            MessageKind::Response { request: MessageId::new(name.into(), -1) }
                        },
                    },
                )
            })
            .collect();
        let reply = TransferReply { messages, next };
        prop_assert_eq!(TransferReply::decode(&reply.encode()), Ok(reply));
    }

    #[test]
    fn transfer_requests_round_trip(
        from in proptest::option::of(any::<i64>()),
        timeout in 0.0f64..1e6,
        queues in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..8), 0..4),
    ) {
        let request = TransferRequest {
            from,
            timeout_s: timeout,
            queues: queues.into_iter().map(Into::into).collect(),
        };
        prop_assert_eq!(TransferRequest::parse(&request.encode()), Ok(request));
    }

    #[test]
    fn the_router_never_panics(
        method in prop_oneof![Just("GET".to_owned()), Just("POST".to_owned()), "[A-Z]{0,6}"],
        path in "(/[a-z%0-9.:_-]{0,6}){0,6}/?",
        body in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = Request::route(&method, &path, Bytes::from(body));
    }

    #[test]
    fn the_router_never_panics_on_any_text(path in "\\PC{0,40}", body in "\\PC{0,40}") {
        let _ = Request::route("GET", &path, Bytes::from(body.clone()));
        let _ = Request::route("POST", &format!("/{path}"), Bytes::from(body));
    }

    #[test]
    fn the_json_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = json::parse(&bytes);
        let _ = TransferReply::decode(&bytes);
        let _ = message_switch::protocol::Diagnostics::decode(&bytes);
        let _ = message_switch::protocol::decode_trace(&bytes);
        let _ = TransferRequest::parse(&bytes);
    }

    #[test]
    fn the_json_reader_never_panics_on_json_like_text(text in "[\\[\\]{}\",:0-9a-z.\\\\ eE+-]{0,64}") {
        let _ = json::parse(text.as_bytes());
        let _ = TransferRequest::parse(text.as_bytes());
    }

    #[test]
    fn floats_print_like_yojson_and_read_back(value in any::<f64>()) {
        let text = json::format_float(value);
        if value.is_finite() {
            prop_assert_eq!(text.parse::<f64>().ok(), Some(value));
            prop_assert!(text.contains(['.', 'e']), "{} must not look like an integer", text);
        }
        match json::parse(text.as_bytes()) {
            Ok(Value::Float(parsed)) => prop_assert!(parsed == value || (parsed.is_nan() && value.is_nan())),
            other => prop_assert!(false, "{} parsed as {:?}", text, other),
        }
    }
}

/// Arbitrary payloads through a real switch: send, then transfer, byte for byte.
#[test]
fn arbitrary_payloads_survive_send_and_transfer_through_a_real_switch() {
    use message_switch::protocol::decode_sent;
    use message_switch::server::{Config, Switch};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (stream, _switch) = runtime.block_on(async {
        let switch = Switch::start(Config::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        switch.serve(listener);
        (
            tokio::net::TcpStream::connect(address).await.unwrap(),
            switch,
        )
    });
    // The property runner wants a `Fn`, so the connection is borrowed mutably inside.
    let raw = std::cell::RefCell::new(common::raw::Raw::new(stream));
    let exchange = |method: &str, path: &str, body: &[u8]| -> Vec<u8> {
        let response = runtime.block_on(raw.borrow_mut().call(method, path, body));
        assert_eq!(response.status, 200, "{}", response.text());
        response.body
    };
    exchange("GET", "/login/props", b"");
    exchange("GET", "/persistent/bytes", b"");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..300), |payload| {
            let id = decode_sent(&exchange("POST", "/request/bytes/r", &payload))
                .unwrap()
                .unwrap();
            let body = format!(
                r#"{{"from":"{}","timeout":0,"queues":["bytes"]}}"#,
                id.index - 1
            );
            let reply =
                TransferReply::decode(&exchange("POST", "/transfer", body.as_bytes())).unwrap();
            prop_assert_eq!(&reply.messages[0].1.payload[..], &payload[..]);
            exchange("GET", &format!("/ack/bytes/{}", id.index), b"");
            Ok(())
        })
        .unwrap();
}
