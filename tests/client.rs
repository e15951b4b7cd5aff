//! The client library against a real switch (running in the test's runtime): calls,
//! timeouts, concurrency, reconnects and switch restarts.

mod common;

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use common::{eventually, find_queue, quick_config, GatedConnector, InProcessSwitch};
use message_switch::client::{
    serve, CallOptions, Client, Connector, Error, Incoming, ServeOptions,
};
use message_switch::protocol::QueueName;

/// Serves `queue` on `connector`, answering `reply:PAYLOAD`, on a background task.
fn echo_service<C: Connector>(
    connector: C,
    queue: &str,
    concurrency: usize,
) -> tokio::task::JoinHandle<()> {
    let options = ServeOptions {
        config: quick_config(),
        concurrency: NonZeroUsize::new(concurrency).expect("non-zero"),
    };
    let queue = QueueName::from(queue);
    tokio::spawn(async move {
        let handler = |incoming: Incoming| async move {
            let mut reply = b"reply:".to_vec();
            reply.extend_from_slice(&incoming.payload);
            Bytes::from(reply)
        };
        let _ = serve(connector, queue, options, handler).await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_gets_the_reply_and_leaves_nothing_behind() {
    let switch = InProcessSwitch::start().await;
    let service = echo_service(switch.connector(), "svc", 1);
    let client = Client::connect(switch.connector(), quick_config())
        .await
        .expect("connect");
    let reply = client
        .call(&"svc".into(), "hello", Some(Duration::from_secs(10)))
        .await
        .expect("call");
    assert_eq!(reply, Bytes::from_static(b"reply:hello"));
    assert_eq!(client.waiter_count(), 0);
    let reply_queue = client.reply_queue().clone();
    eventually("the request and the response are acked", || async {
        let diagnostics = switch.diagnostics().await;
        let service_queue = find_queue(&diagnostics, &"svc".into())?;
        let replies = find_queue(&diagnostics, &reply_queue)?;
        (service_queue.queue_contents.is_empty() && replies.queue_contents.is_empty()).then_some(())
    })
    .await;
    service.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_call_leaves_no_waiter_and_its_late_reply_is_dropped() {
    let switch = InProcessSwitch::start().await;
    let client = Client::connect(switch.connector(), quick_config())
        .await
        .expect("connect");
    let error = client
        .call(&"svc".into(), "late", Some(Duration::from_millis(200)))
        .await
        .expect_err("nobody serves svc yet");
    assert!(
        matches!(&error, Error::CallTimedOut { queue, timeout }
            if queue == &QueueName::from("svc") && *timeout == Duration::from_millis(200)),
        "{error:?}"
    );
    assert_eq!(client.waiter_count(), 0, "the timed-out waiter is gone");

    // The request is still queued; once a service answers it, the late reply reaches the
    // client, finds no waiter, and is acked rather than left in the reply queue.
    let service = echo_service(switch.connector(), "svc", 1);
    let reply_queue = client.reply_queue().clone();
    eventually("the late reply is acked and dropped", || async {
        let diagnostics = switch.diagnostics().await;
        let service_queue = find_queue(&diagnostics, &"svc".into())?;
        let replies = find_queue(&diagnostics, &reply_queue)?;
        // The service's poll time shows it has started, so the reply has been sent.
        (service_queue.next_transfer_expected.is_some()
            && service_queue.queue_contents.is_empty()
            && replies.queue_contents.is_empty())
        .then_some(())
    })
    .await;
    assert_eq!(client.waiter_count(), 0);
    let reply = client
        .call(&"svc".into(), "again", Some(Duration::from_secs(10)))
        .await
        .expect("the next call works");
    assert_eq!(reply, Bytes::from_static(b"reply:again"));
    service.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_leaves_no_waiter() {
    let switch = InProcessSwitch::start().await;
    let client = Client::connect(switch.connector(), quick_config())
        .await
        .expect("connect");
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.call(&"nobody".into(), "x", None).await })
    };
    eventually("the call is waiting", || async {
        (client.waiter_count() == 1).then_some(())
    })
    .await;
    call.abort();
    let _ = call.await;
    assert_eq!(client.waiter_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_fails_the_call_only_when_creation_is_off() {
    let switch = InProcessSwitch::start().await;
    let client = Client::connect(switch.connector(), quick_config())
        .await
        .expect("connect");
    let options = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        create_queue: false,
    };
    let error = client
        .call_with(&"absent".into(), Bytes::from_static(b"x"), &options)
        .await
        .expect_err("the queue does not exist");
    assert!(
        matches!(&error, Error::QueueDeleted(queue) if queue == &QueueName::from("absent")),
        "{error:?}"
    );
    assert_eq!(client.waiter_count(), 0);

    // With creation on (the default), the request waits in the new queue.
    let error = client
        .call(&"absent".into(), "y", Some(Duration::from_millis(100)))
        .await
        .expect_err("nobody serves it");
    assert!(matches!(error, Error::CallTimedOut { .. }), "{error:?}");
    let diagnostics = switch.diagnostics().await;
    let queue = find_queue(&diagnostics, &"absent".into()).expect("created");
    assert_eq!(queue.queue_contents.len(), 1);
    assert_eq!(
        queue.queue_contents[0].1.message.payload,
        Bytes::from_static(b"y")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_get_each_others_replies() {
    let switch = InProcessSwitch::start().await;
    // A service that answers out of order: later requests often finish first.
    let options = ServeOptions {
        config: quick_config(),
        concurrency: NonZeroUsize::new(8).expect("non-zero"),
    };
    let service = tokio::spawn(serve(
        switch.connector(),
        "svc".into(),
        options,
        |incoming: Incoming| async move {
            let delay = (incoming.payload.len() * 7919) % 23;
            tokio::time::sleep(Duration::from_millis(delay as u64)).await;
            let mut reply = b"reply:".to_vec();
            reply.extend_from_slice(&incoming.payload);
            Bytes::from(reply)
        },
    ));
    let first = Client::connect(switch.connector(), quick_config())
        .await
        .expect("connect");
    let second = Client::connect(switch.connector(), quick_config())
        .await
        .expect("connect");
    assert_ne!(first.reply_queue(), second.reply_queue());
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..60 {
        let client = if index % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        calls.spawn(async move {
            let body = format!("call {index} {}", "x".repeat(index));
            let reply = client
                .call(&"svc".into(), body.clone(), Some(Duration::from_secs(20)))
                .await
                .expect("call");
            assert_eq!(reply, Bytes::from(format!("reply:{body}")));
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("every call got its own reply");
    }
    assert_eq!(first.waiter_count(), 0);
    assert_eq!(second.waiter_count(), 0);
    service.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_handles_requests_one_at_a_time_in_id_order_by_default() {
    let switch = InProcessSwitch::start().await;
    let mut connection = common::connect(&switch.socket).await;
    connection
        .create_persistent(&"ordered".into())
        .await
        .expect("create");
    connection
        .create_persistent(&"sink".into())
        .await
        .expect("create");
    for index in 0..5 {
        connection
            .send_request(
                &"ordered".into(),
                &"sink".into(),
                Bytes::from(index.to_string()),
            )
            .await
            .expect("send")
            .expect("the queue exists");
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let overlapped = Arc::new(AtomicUsize::new(0));
    let service = {
        let (seen, running, overlapped) = (seen.clone(), running.clone(), overlapped.clone());
        tokio::spawn(serve(
            switch.connector(),
            "ordered".into(),
            ServeOptions {
                config: quick_config(),
                ..ServeOptions::default()
            },
            move |incoming: Incoming| {
                let (seen, running, overlapped) =
                    (seen.clone(), running.clone(), overlapped.clone());
                async move {
                    if running.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlapped.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    seen.lock().expect("lock").push(incoming.payload.clone());
                    running.fetch_sub(1, Ordering::SeqCst);
                    incoming.payload
                }
            },
        ))
    };
    eventually("every request is answered and acked", || async {
        let diagnostics = switch.diagnostics().await;
        let ordered = find_queue(&diagnostics, &"ordered".into())?;
        let sink = find_queue(&diagnostics, &"sink".into())?;
        (ordered.queue_contents.is_empty() && sink.queue_contents.len() == 5).then_some(())
    })
    .await;
    let seen = seen.lock().expect("lock").clone();
    let expected: Vec<Bytes> = (0..5).map(|i: i32| Bytes::from(i.to_string())).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        overlapped.load(Ordering::SeqCst),
        0,
        "handlers never overlap"
    );
    service.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_its_connections_a_client_recreates_its_reply_queue() {
    let switch = InProcessSwitch::start().await;
    let service = echo_service(switch.connector(), "svc", 1);
    let (connector, gate) = GatedConnector::new(&switch.socket);
    let client = Client::connect(connector, quick_config())
        .await
        .expect("connect");
    let reply_queue = client.reply_queue().clone();
    let reply = client
        .call(&"svc".into(), "before", Some(Duration::from_secs(10)))
        .await
        .expect("call");
    assert_eq!(reply, Bytes::from_static(b"reply:before"));

    // Cut every connection and keep the client out until the switch has cleaned up the
    // session's transient reply queue, as it does when a session's last connection closes.
    gate.close();
    gate.cut();
    eventually("the switch removes the reply queue", || async {
        find_queue(&switch.diagnostics().await, &reply_queue)
            .is_none()
            .then_some(())
    })
    .await;
    gate.open();

    let reply = client
        .call(&"svc".into(), "after", Some(Duration::from_secs(10)))
        .await
        .expect("the call after the reconnect succeeds");
    assert_eq!(reply, Bytes::from_static(b"reply:after"));
    assert!(
        find_queue(&switch.diagnostics().await, &reply_queue).is_some(),
        "the reply queue was re-created"
    );
    assert_eq!(client.waiter_count(), 0);
    service.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_a_switch_restart_and_serves_what_was_queued_meanwhile() {
    let mut switch = InProcessSwitch::start().await;
    let (connector, gate) = GatedConnector::new(&switch.socket);
    let service = echo_service(connector, "svc", 1);
    let client = Client::connect(switch.connector(), quick_config())
        .await
        .expect("connect");
    let reply = client
        .call(&"svc".into(), "before", Some(Duration::from_secs(10)))
        .await
        .expect("call");
    assert_eq!(reply, Bytes::from_static(b"reply:before"));

    // Restart the switch (losing all state) while keeping the service away from it.
    gate.close();
    switch.restart().await;
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call(&"svc".into(), "meanwhile", Some(Duration::from_secs(20)))
                .await
        })
    };
    eventually("the request is queued on the new switch", || async {
        let diagnostics = switch.diagnostics().await;
        let queue = find_queue(&diagnostics, &"svc".into())?;
        (queue.queue_contents.len() == 1).then_some(())
    })
    .await;
    let diagnostics = switch.diagnostics().await;
    let queue = find_queue(&diagnostics, &"svc".into()).expect("queued");
    assert_eq!(
        queue.next_transfer_expected, None,
        "the service has not polled the new switch yet"
    );

    gate.open();
    let reply = call
        .await
        .expect("the call task")
        .expect("the service comes back and answers");
    assert_eq!(reply, Bytes::from_static(b"reply:meanwhile"));
    service.abort();
}

/// A switch with the given engine limits on a Unix socket in a temporary directory.
async fn limited_switch(
    engine: message_switch::engine::Config,
) -> (
    message_switch::server::Switch,
    tempfile::TempDir,
    message_switch::client::UnixConnector,
) {
    let switch = message_switch::server::Switch::start(message_switch::server::Config {
        engine,
        ..message_switch::server::Config::default()
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let socket = dir.path().join("sock");
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind the socket");
    switch.serve(listener);
    (
        switch,
        dir,
        message_switch::client::UnixConnector::new(&socket),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_by_a_limit_fails_at_once_with_a_typed_error() {
    // Room for the client's reply queue only: the service queue cannot be created.
    let (switch, _dir, connector) = limited_switch(message_switch::engine::Config {
        queues_max: 1,
        ..message_switch::engine::Config::default()
    })
    .await;
    let client = Client::connect(connector, quick_config())
        .await
        .expect("connect");
    let error = client
        .call(&"svc".into(), "x", None)
        .await
        .expect_err("the switch has no room for the service queue");
    assert!(error.is_overload() && !error.is_refusal(), "{error:?}");
    assert!(
        matches!(&error, Error::Status { status: 429, text } if text.contains("too many queues")),
        "{error:?}"
    );
    assert_eq!(client.waiter_count(), 0);
    let stats = switch.stats().await.expect("stats");
    assert_eq!(stats.limits_hit.queues, 1, "refused once, not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refused_by_the_switch_returns_a_typed_error() {
    let (_switch, _dir, connector) = limited_switch(message_switch::engine::Config {
        name_bytes_max: 8,
        ..message_switch::engine::Config::default()
    })
    .await;
    let options = ServeOptions {
        config: quick_config(),
        ..ServeOptions::default()
    };
    let handler = |_: Incoming| async { Bytes::new() };
    let error = serve(
        connector.clone(),
        "a-very-long-name".into(),
        options.clone(),
        handler,
    )
    .await
    .expect_err("the name is over the switch's limit");
    assert!(error.is_refusal(), "{error:?}");
    // A listener whose long poll the switch refuses (a timeout over its limit) gets the
    // typed error too, instead of reconnecting for ever.
    let (_switch, _dir, connector) = limited_switch(message_switch::engine::Config {
        wait_timeout_max: Duration::from_secs(1),
        ..message_switch::engine::Config::default()
    })
    .await;
    let error = serve(connector, "svc".into(), options, handler)
        .await
        .expect_err("the long poll is over the switch's limit");
    assert!(
        matches!(&error, Error::Status { status: 400, text } if text.contains("timeout too long")),
        "{error:?}"
    );
}

/// A client whose reply listener the switch keeps refusing (its long poll is over the
/// switch's limit) backs off exponentially: in 20 s of (paused, virtual) time it tries a
/// handful of times, where a loop that reset its back-off after every successful connect
/// tried every 20 ms.
#[tokio::test(start_paused = true)]
async fn a_refused_reply_listener_backs_off_instead_of_hammering() {
    let (switch, _dir, connector) = limited_switch(message_switch::engine::Config {
        wait_timeout_max: Duration::from_secs(1),
        ..message_switch::engine::Config::default()
    })
    .await;
    let config = message_switch::client::ClientConfig {
        jitter: message_switch::client::Jitter::seeded(12),
        ..quick_config()
    };
    let _client = Client::connect(connector, config).await.expect("connect");
    tokio::time::sleep(Duration::from_secs(20)).await;
    let refused = switch.stats().await.expect("stats").limits_hit.wait_timeout;
    // Delays of at least 10, 20, 40, 80 and then 100 ms (half of each doubling step, up to
    // half of the 200 ms cap): at most 4 + 20 s / 100 ms attempts.
    assert!((1..=205).contains(&refused), "{refused} refused long polls");
}
