//! The web console in a real headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs), driven by a scripted workload: two services, a caller, and a caller whose
//! request waits on a queue nobody serves. The test checks the service map's nodes and
//! edges, one sequence-chart arrow per trace event, the waiting-request marker, that the
//! chart follows new calls (and stops while paused), the map → chart filter, the downloads,
//! the keyboard, and that the browser logs no error. A second test loads the page against
//! 1,000 queues and a full 10,000-event trace ring, records the render times the page
//! measures and checks that what the page draws and fetches stays bounded. Screenshots of
//! each view (light and dark) go to `target/test-artifacts/`.
//!
//! The browser is driven through the Chrome DevTools Protocol on a websocket, so no
//! WebDriver or browser download is needed. Without Chromium the tests are skipped locally
//! and fail under CI (`CI` set), where they must run. Every wait is for a condition, with a
//! generous deadline, so a loaded CI machine only makes them slower.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use message_switch::client::{serve, Client, ClientConfig, Incoming, ServeOptions, TcpConnector};
use message_switch::protocol::{QueueName, SessionToken};
use message_switch::server::{Config, Switch};

mod common;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium that is killed when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools_port: u16,
}

impl Browser {
    fn launch() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        let stderr = child.stderr.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = sender.send(url.to_owned());
                }
            }
        });
        let url = receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium announces its DevTools endpoint");
        let port = url
            .trim_start_matches("ws://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Browser {
            child,
            _profile: profile,
            devtools_port: port,
        }
    }

    /// The websocket URL of the first page target.
    fn page_websocket(&self) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.devtools_port)).unwrap();
        write!(
            stream,
            "GET /json/list HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n\r\n",
            self.devtools_port
        )
        .unwrap();
        // Chromium does not close the connection; read the head, then content-length bytes.
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        let body = loop {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "DevTools closed the connection early");
            response.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&response).into_owned();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("DevTools sends content-length");
            if response.len() >= end + 4 + length {
                break response[end + 4..end + 4 + length].to_vec();
            }
        };
        let targets: Value = serde_json::from_slice(&body).unwrap();
        targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long any condition in the page may take to become true; generous, because CI
/// machines are shared and the page polls the overview every 2 s.
const PAGE_DEADLINE: Duration = Duration::from_secs(60);

/// A DevTools session on one page, collecting the errors the page reports meanwhile.
struct Page {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Uncaught exceptions, `console.error` calls and error log entries, as text.
    errors: Vec<String>,
}

impl Page {
    fn attach(url: &str) -> Page {
        let (socket, _) = tungstenite::connect(url).expect("DevTools websocket");
        let mut page = Page {
            socket,
            next_id: 1,
            errors: Vec::new(),
        };
        page.call("Page.enable", json!({}));
        page.call("Runtime.enable", json!({}));
        page.call("Log.enable", json!({}));
        page
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(tungstenite::Message::text(message.to_string()))
            .unwrap();
        loop {
            let reply = self.socket.read().unwrap();
            let Ok(text) = reply.to_text() else { continue };
            let value: Value = serde_json::from_str(text).unwrap();
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method} failed: {value}");
                return value["result"].clone();
            }
            self.note_event(&value);
        }
    }

    fn note_event(&mut self, value: &Value) {
        let params = &value["params"];
        match value["method"].as_str() {
            Some("Runtime.exceptionThrown") => self
                .errors
                .push(format!("exception: {}", params["exceptionDetails"])),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => self
                .errors
                .push(format!("console.error: {}", params["args"])),
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", params["entry"]))
            }
            _ => {}
        }
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression} threw: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Opens the console and waits until its script runs.
    fn open_console(&mut self, address: &str) {
        self.call(
            "Page.navigate",
            json!({ "url": format!("http://{address}/admin") }),
        );
        self.wait_for("the console's script", "typeof consoleState === 'object'");
    }

    /// Waits until `expression` is true; while the page loads it may throw, which counts as
    /// not yet.
    fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + PAGE_DEADLINE;
        let guarded = format!(
            "(() => {{ try {{ return ({expression}); }} catch (_) {{ return false; }} }})()"
        );
        while self.evaluate(&guarded) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn count(&mut self, selector: &str) -> u64 {
        let expression = format!(
            "document.querySelectorAll({}).length",
            serde_json::to_string(selector).unwrap()
        );
        self.evaluate(&expression).as_u64().unwrap()
    }

    /// Types one key, as a user at the keyboard would.
    fn press(&mut self, key: &str) {
        // Printable keys carry their text; named ones (Escape) do not.
        let text = if key.chars().count() == 1 { key } else { "" };
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "text": text }),
            );
        }
    }

    fn screenshot(&mut self, name: &str) {
        // Let the page finish the frame it is drawing.
        self.evaluate("new Promise((resolve) => requestAnimationFrame(() => resolve(true)))");
        let screenshot = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": false }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(screenshot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let path = artifacts().join(name);
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot saved to {}", path.display());
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whether the browser tests can run here (they must under CI).
fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{CHROMIUM} is missing; .ci/run installs Debian's chromium"
    );
    eprintln!("skipped: {CHROMIUM} is not installed (apt-get install chromium)");
    false
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn start_switch(runtime: &tokio::runtime::Runtime, config: Config) -> (Switch, String) {
    runtime.block_on(async {
        let switch = Switch::start(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        switch.serve(listener);
        (switch, address)
    })
}

/// The switch's own count of trace events (the ring never overflows in these tests).
fn trace_events(runtime: &tokio::runtime::Runtime, switch: &Switch) -> u64 {
    runtime.block_on(switch.stats()).unwrap().trace_events as u64
}

/// The trace events once every finished call's acks are in (a call returns before the
/// service and the caller ack), so that the count no longer moves: only the request nobody
/// serves stays stored.
fn settled_trace_events(runtime: &tokio::runtime::Runtime, switch: &Switch) -> u64 {
    common::wait_until("the calls' acks", || {
        let stats = runtime.block_on(switch.stats()).unwrap();
        (stats.messages == 1).then_some(stats.trace_events as u64)
    })
}

fn client_config(token: &str) -> ClientConfig {
    ClientConfig {
        token: SessionToken::from(token),
        ..ClientConfig::default()
    }
}

/// A service answering every request on `queue` as `token`: a JSON-RPC success, or an
/// error for the method `fail`.
fn start_service(runtime: &tokio::runtime::Runtime, address: &str, queue: &str, token: &str) {
    let options = ServeOptions {
        config: client_config(token),
        ..ServeOptions::default()
    };
    runtime.spawn(serve(
        TcpConnector::new(address),
        QueueName::from(queue),
        options,
        |incoming: Incoming| async move {
            let body = String::from_utf8_lossy(&incoming.payload).into_owned();
            let reply = if body.contains("\"fail\"") {
                r#"{"result":null,"error":"INTERNAL_ERROR","id":1}"#
            } else {
                r#"{"result":"done","error":null,"id":1}"#
            };
            bytes::Bytes::from(reply)
        },
    ));
}

/// A logged-in RPC client with its reply queue.
fn connect(runtime: &tokio::runtime::Runtime, address: &str, token: &str) -> Client<TcpConnector> {
    runtime
        .block_on(Client::connect(
            TcpConnector::new(address),
            client_config(token),
        ))
        .unwrap()
}

fn call(
    runtime: &tokio::runtime::Runtime,
    client: &Client<TcpConnector>,
    queue: &str,
    method: &str,
) {
    let body = format!(r#"{{"method":"{method}","params":[],"id":1}}"#);
    let queue = QueueName::from(queue);
    runtime
        .block_on(client.call(&queue, body, Some(Duration::from_secs(60))))
        .expect("the service answers");
}

#[test]
fn the_console_draws_the_map_the_chart_and_the_queues_of_a_live_switch() {
    if !chromium_available() {
        return;
    }
    let runtime = runtime();
    let (switch, address) = start_switch(&runtime, Config::default());
    start_service(&runtime, &address, "org.xen.alpha", "alpha-daemon");
    start_service(&runtime, &address, "org.xen.beta", "beta-daemon");
    let xapi = connect(&runtime, &address, "xapi");
    call(&runtime, &xapi, "org.xen.alpha", "VM.start");
    call(&runtime, &xapi, "org.xen.alpha", "VM.migrate");
    call(&runtime, &xapi, "org.xen.beta", "fail");
    // A call nobody will ever answer: it waits on a queue without a listener.
    let stuck = connect(&runtime, &address, "stuck-caller");
    let waiting_call = {
        let stuck = stuck.clone();
        runtime.spawn(async move {
            let queue = QueueName::from("org.xen.nobody");
            let _ = stuck
                .call(&queue, r#"{"method":"SR.scan","params":[],"id":7}"#, None)
                .await;
        })
    };
    common::wait_until("the waiting request is queued", || {
        let stats = runtime.block_on(switch.stats()).unwrap();
        (stats.messages >= 1).then_some(())
    });

    let browser = Browser::launch();
    let mut page = Page::attach(&browser.page_websocket());
    // The page shows the browser's time zone; make it one that is not the machine's.
    page.call(
        "Emulation.setTimezoneOverride",
        json!({ "timezoneId": "Asia/Tokyo" }),
    );
    page.open_console(&address);
    assert_eq!(
        page.evaluate("document.getElementById('timezone').textContent"),
        json!("times: Asia/Tokyo")
    );

    // The service map: two callers, three services, and an edge per caller → service pair;
    // the one to the queue nobody serves stands out, as does the one with an error.
    page.wait_for(
        "the service map's edges",
        r#"document.querySelectorAll('#map g.edge').length === 3
           && document.querySelector('#map g.edge.bad[data-caller="stuck-caller"][data-service="org.xen.nobody"]') !== null"#,
    );
    let nodes: Vec<String> = serde_json::from_value(page.evaluate(
        "[...document.querySelectorAll('#map g.node')].map((n) => n.dataset.node).sort()",
    ))
    .unwrap();
    assert_eq!(
        nodes,
        [
            "org.xen.alpha",
            "org.xen.beta",
            "org.xen.nobody",
            "stuck-caller",
            "xapi"
        ]
    );
    assert_eq!(
        page.count(r#"#map g.edge.ok[data-caller="xapi"][data-service="org.xen.alpha"]"#),
        1
    );
    assert_eq!(
        page.count(r#"#map g.edge.warn[data-caller="xapi"][data-service="org.xen.beta"]"#),
        1
    );
    let alpha_label = page.evaluate(
        r#"document.querySelector('#map g.edge[data-service="org.xen.alpha"] text').textContent"#,
    );
    let alpha_label = alpha_label.as_str().unwrap();
    assert!(
        alpha_label.starts_with("2/min")
            && alpha_label.contains("p50")
            && alpha_label.contains("p99"),
        "{alpha_label}"
    );
    page.screenshot("console-map.png");

    // The waiting-request marker, in the queue table and in the banner.
    page.press("q");
    page.wait_for(
        "the waiting-request marker",
        r#"(() => { const marker = document.querySelector('tr[data-queue="org.xen.nobody"] .marker');
                   return marker !== null && marker.dataset.waiting === "1"
                     && document.getElementById('alerts').textContent.includes('org.xen.nobody'); })()"#,
    );
    assert_eq!(page.count("#queues tbody tr.waiting"), 1);
    assert_eq!(
        page.evaluate(r#"document.getElementById('view-queues').hidden"#),
        json!(false),
        "the q key shows the queue table"
    );
    page.wait_for(
        "a sparkline per queue",
        r#"document.querySelectorAll('tr[data-queue="org.xen.alpha"] svg.spark polyline').length === 2"#,
    );
    page.screenshot("console-queues.png");

    // The sequence chart: one arrow per trace event (no RPC is left out: there are fewer
    // than the 50 it shows).
    page.press("s");
    let events = settled_trace_events(&runtime, &switch);
    page.wait_for(
        "one arrow per trace event",
        &format!("document.querySelectorAll('#msc g.arrow').length === {events}"),
    );
    assert!(page.count("#msc g.head") >= 7, "a lifeline per participant");
    // Times in Tokyo (UTC+9, no daylight saving), and in UTC after `t`.
    let first_time = "document.querySelector('#msc text.time').textContent";
    let hour = |text: Value| -> u32 { text.as_str().unwrap()[..2].parse().unwrap() };
    let tokyo = hour(page.evaluate(first_time));
    page.press("t");
    assert_eq!(
        page.evaluate("document.getElementById('timezone').textContent"),
        json!("times: UTC")
    );
    let utc = hour(page.evaluate(first_time));
    assert_eq!((utc + 9) % 24, tokyo);
    page.screenshot("console-sequence.png");

    // It follows a new call…
    call(&runtime, &xapi, "org.xen.alpha", "VM.shutdown");
    let events = settled_trace_events(&runtime, &switch);
    page.wait_for(
        "the new call in the chart",
        &format!(
            "document.querySelectorAll('#msc g.arrow').length === {events}
             && document.getElementById('msc').textContent.includes('VM.shutdown')"
        ),
    );
    // …but not while paused (the page still reads the trace meanwhile).
    page.press("p");
    assert_eq!(page.evaluate("consoleState.paused"), json!(true));
    let drawn = page.count("#msc g.arrow");
    call(&runtime, &xapi, "org.xen.alpha", "VM.suspend");
    let events = settled_trace_events(&runtime, &switch);
    page.wait_for(
        "the paused page to read the new events",
        &format!("consoleState.nextTrace === {events}"),
    );
    assert_eq!(
        page.count("#msc g.arrow"),
        drawn,
        "a paused chart stays still"
    );
    page.press("p");
    page.wait_for(
        "the resumed chart",
        &format!("document.querySelectorAll('#msc g.arrow').length === {events}"),
    );

    // A map edge (here reached from the keyboard: focus, Enter) filters the chart to that
    // caller and service.
    page.press("m");
    page.evaluate(
        r#"document.querySelector('#map g.edge[data-service="org.xen.beta"]').focus(); document.activeElement.dataset.service"#,
    );
    page.press("Enter");
    page.wait_for(
        "the filtered chart",
        r#"!document.getElementById('view-msc').hidden
           && !document.getElementById('msc-filter').hidden
           && [...document.querySelectorAll('#msc g.head')].every((h) => !h.textContent.includes('alpha') && !h.textContent.includes('nobody'))
           && document.getElementById('msc').textContent.includes('FAILURE')"#,
    );
    assert!(page.count("#msc g.arrow") >= 4, "the beta call's arrows");
    assert!(
        page.count("#msc g.arrow.failure") >= 1,
        "the error response stands out"
    );
    let mscgen = page.evaluate("mscgenText()");
    let mscgen = mscgen.as_str().unwrap();
    assert!(mscgen.starts_with("msc {\n"), "{mscgen}");
    assert!(
        mscgen.contains(r#""xapi" => "org.xen.beta" [ label = "fail" ] ;"#),
        "{mscgen}"
    );
    assert!(!mscgen.contains("alpha"), "{mscgen}");
    let svg_ok = page.evaluate(
        r#"(() => { const doc = new DOMParser().parseFromString(svgDocument(), 'image/svg+xml');
                   return doc.getElementsByTagName('parsererror').length === 0
                     && doc.documentElement.localName === 'svg'
                     && doc.querySelectorAll('g.arrow').length > 0; })()"#,
    );
    assert_eq!(svg_ok, json!(true), "the SVG download is a standalone SVG");
    page.press("Escape");
    page.wait_for(
        "the unfiltered chart",
        &format!("document.querySelectorAll('#msc g.arrow').length === {events}"),
    );

    // The payload on click.
    page.evaluate(r#"document.querySelector('#msc g.arrow.request').dispatchEvent(new MouseEvent('click')) || true"#);
    page.wait_for(
        "the payload panel",
        r#"!document.getElementById('detail').hidden && document.getElementById('detail-body').textContent.includes('"method"')"#,
    );
    page.press("Escape");

    // Dark mode.
    page.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    );
    page.press("m");
    page.screenshot("console-map-dark.png");
    page.press("s");
    page.screenshot("console-sequence-dark.png");

    page.evaluate("true"); // drain the events the last steps caused
    assert!(
        page.errors.is_empty(),
        "the browser reported errors: {:#?}",
        page.errors
    );
    waiting_call.abort();
}

/// The render budget stated in docs/operations.md: each view draws in under this on a
/// loaded 2-core CI machine with 1,000 queues and a full 10,000-event trace. It is measured
/// in the browser and reported, not asserted (timed assertions would flake on a shared
/// machine); what is asserted is what keeps it true: how much the page draws and fetches.
const RENDER_BUDGET_MS: f64 = 200.0;

/// Bound on the overview JSON: 100 queues × (two 60-point series and a few numbers) plus
/// 100 edges, with short names.
const OVERVIEW_BYTES_MAX: usize = 128 * 1024;

#[test]
fn the_console_stays_bounded_with_1000_queues_and_a_full_trace() {
    if !chromium_available() {
        return;
    }
    let runtime = runtime();
    let mut config = Config::default();
    config.engine.trace_entries_max = 10_000;
    config.engine.trace_bytes_max = 64 << 20;
    let (switch, address) = start_switch(&runtime, config);
    let queues = 1000;
    let events = 10_000;
    runtime.block_on(async {
        let mut raw = common::raw::tcp(&address).await;
        raw.login("load-caller").await;
        for queue in 0..queues {
            let response = raw.get(&format!("/persistent/load-{queue:04}")).await;
            assert_eq!(response.status, 200);
        }
        for n in 0..events {
            let body = format!(
                r#"{{"method":"Host.call_{}","params":[{n}],"id":{n}}}"#,
                n % 17
            );
            let path = format!("/request/load-{:04}/reply-{}", n % queues, n % 7);
            let response = raw.call("POST", &path, body.as_bytes()).await;
            assert_eq!(response.status, 200, "{}", response.text());
        }
    });
    assert_eq!(trace_events(&runtime, &switch), events);
    // The sampler keeps the busiest 100 and counts the rest.
    let overview = common::wait_until("the sampler's first samples", || {
        let body = runtime.block_on(async {
            let mut raw = common::raw::tcp(&address).await;
            raw.get("/admin/api/overview").await.body
        });
        let value: Value = serde_json::from_slice(&body).ok()?;
        (value["queues"].as_array()?.len() == 100 && value["untracked"]["queues"] == 900)
            .then_some(body)
    });
    assert!(
        overview.len() < OVERVIEW_BYTES_MAX,
        "the overview is {} bytes",
        overview.len()
    );

    let browser = Browser::launch();
    let mut page = Page::attach(&browser.page_websocket());
    page.open_console(&address);
    page.wait_for(
        "the whole trace in the page",
        &format!("consoleState.events.length === {events} && document.querySelectorAll('#msc g.arrow').length > 0"),
    );
    page.wait_for(
        "the queue table",
        "document.querySelectorAll('#queues tbody tr').length === 100",
    );
    // What is drawn stays bounded: the last 50 RPCs (one arrow each here: nobody serves
    // these queues), 100 table rows, a map node per caller and service.
    assert_eq!(page.count("#msc g.arrow"), 50);
    assert!(page.count("#map g.node") <= 101);
    page.press("q");
    page.press("s");
    page.press("m");
    page.screenshot("console-load-map.png");
    let timings = page.evaluate("consoleState.timings");
    let report = json!({
        "queues": queues,
        "trace_events": events,
        "overview_bytes": overview.len(),
        "render_ms_max": timings,
        "render_budget_ms": RENDER_BUDGET_MS,
    });
    std::fs::write(
        artifacts().join("console-load.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    eprintln!("console load check: {report}");
    for view in ["map", "msc", "queues"] {
        let took = timings[view].as_f64().unwrap();
        if took > RENDER_BUDGET_MS {
            eprintln!(
                "note: the {view} view took {took:.0} ms, over the {RENDER_BUDGET_MS} ms budget"
            );
        }
    }
    page.evaluate("true");
    assert!(
        page.errors.is_empty(),
        "the browser reported errors: {:#?}",
        page.errors
    );
}

/// The overview endpoint over real HTTP, without a browser (so it runs everywhere): a
/// served call and a call nobody serves show up as edges, queues and listeners.
#[test]
fn the_overview_endpoint_reports_edges_queues_and_listeners() {
    let runtime = runtime();
    let (switch, address) = start_switch(&runtime, Config::default());
    start_service(&runtime, &address, "org.xen.alpha", "alpha-daemon");
    let xapi = connect(&runtime, &address, "xapi");
    call(&runtime, &xapi, "org.xen.alpha", "VM.start");
    call(&runtime, &xapi, "org.xen.alpha", "fail");
    runtime.block_on(async {
        let mut raw = common::raw::tcp(&address).await;
        raw.login("lonely").await;
        assert_eq!(raw.get("/persistent/org.xen.nobody").await.status, 200);
        let response = raw
            .call("POST", "/request/org.xen.nobody/lonely", b"{}")
            .await;
        assert_eq!(response.status, 200);
    });
    settled_trace_events(&runtime, &switch);
    let overview = common::wait_until("a sample with both edges", || {
        let response = runtime.block_on(async {
            let mut raw = common::raw::tcp(&address).await;
            raw.get("/admin/api/overview").await
        });
        assert_eq!(response.status, 200);
        assert!(response.head.contains("content-type: application/json"));
        let value: Value = serde_json::from_slice(&response.body).unwrap();
        let edges = value["edges"].as_array()?;
        let answered = edges.iter().find(|e| e["service"] == "org.xen.alpha")?;
        (edges.len() == 2 && answered["responses"] == 2).then_some(value)
    });
    let edge = |service: &str| {
        overview["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["service"] == service)
            .unwrap()
            .clone()
    };
    let alpha = edge("org.xen.alpha");
    assert_eq!(alpha["caller"], "xapi");
    assert_eq!(alpha["calls"], 2);
    assert_eq!(alpha["errors"], 1);
    assert!(alpha["p50_ms"].as_f64().unwrap() >= 0.0);
    assert!(alpha["p99_ms"].as_f64().unwrap() >= alpha["p50_ms"].as_f64().unwrap());
    let nobody = edge("org.xen.nobody");
    assert_eq!(nobody["caller"], "lonely");
    assert_eq!(nobody["responses"], 0);
    let queue = |name: &str| {
        overview["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(queue("org.xen.alpha")["listener"], "alive");
    assert_eq!(queue("org.xen.alpha")["server"], "alpha-daemon");
    assert_eq!(queue("org.xen.nobody")["listener"], "none");
    assert_eq!(queue("org.xen.nobody")["depth"], 1);
    assert_eq!(overview["untracked"]["queues"], 0);
}

/// The screenshots in `docs/` (`console*.png`): a livelier workload than the tests' for 90 s,
/// so that rates, latencies and sparklines have a shape. Not part of the suite (it takes
/// two minutes); run with
/// `cargo test --test console_browser -- --ignored docs_screenshots`, then copy
/// `target/test-artifacts/docs-*.png` over `docs/console*.png`.
#[test]
#[ignore]
fn docs_screenshots() {
    if !chromium_available() {
        return;
    }
    let runtime = runtime();
    let (_switch, address) = start_switch(&runtime, Config::default());
    for (queue, token, delay_ms) in [
        ("org.xen.xapi.xenops.classic", "xenopsd-xc", 12),
        ("org.xen.xapi.xenops.simulator", "xenopsd-simulator", 3),
        ("org.xen.xapi.squeezed", "squeezed", 1),
    ] {
        let options = ServeOptions {
            config: client_config(token),
            ..ServeOptions::default()
        };
        runtime.spawn(serve(
            TcpConnector::new(&address),
            QueueName::from(queue),
            options,
            move |incoming: Incoming| async move {
                let body = String::from_utf8_lossy(&incoming.payload).into_owned();
                let jitter = u64::try_from(incoming.id.index % 7).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(delay_ms + jitter * delay_ms / 2)).await;
                let reply = if body.contains("VM.migrate") && incoming.id.index % 5 == 0 {
                    r#"{"result":null,"error":["VM_MIGRATE_FAILED"],"id":1}"#
                } else {
                    r#"{"result":"OpaqueRef:5a1c","error":null,"id":1}"#
                };
                bytes::Bytes::from(reply)
            },
        ));
    }
    let started = Instant::now();
    let mut workers = Vec::new();
    for (token, calls) in [
        (
            "xapi",
            vec![
                ("org.xen.xapi.xenops.classic", "VM.start"),
                ("org.xen.xapi.xenops.classic", "VM.migrate"),
                ("org.xen.xapi.squeezed", "balance_memory"),
            ],
        ),
        (
            "xapi-nbd",
            vec![("org.xen.xapi.xenops.simulator", "VBD.plug")],
        ),
    ] {
        let client = runtime
            .block_on(Client::connect(
                TcpConnector::new(&address),
                client_config(token),
            ))
            .unwrap();
        workers.push(runtime.spawn(async move {
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(90) {
                let (queue, method) = calls[(n % calls.len() as u64) as usize];
                let body =
                    format!(r#"{{"method":"{method}","params":["OpaqueRef:{n}"],"id":{n}}}"#);
                let _ = client
                    .call(&QueueName::from(queue), body, Some(Duration::from_secs(10)))
                    .await;
                n += 1;
                // Bursts every 20 s, so the sparklines have a shape.
                let pause = if started.elapsed().as_secs() % 20 < 5 {
                    20
                } else {
                    150
                };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }
    let storage = connect(&runtime, &address, "xapi-storage");
    runtime.spawn(async move {
        let queue = QueueName::from("org.xen.xapi.storage.nfs");
        let _ = storage
            .call(&queue, r#"{"method":"SR.scan","params":[],"id":1}"#, None)
            .await;
    });
    for worker in workers {
        runtime.block_on(worker).unwrap();
    }
    let browser = Browser::launch();
    let mut page = Page::attach(&browser.page_websocket());
    page.open_console(&address);
    page.wait_for(
        "the map",
        "document.querySelectorAll('#map g.edge').length === 4",
    );
    page.screenshot("docs-map.png");
    page.press("s");
    page.evaluate("document.getElementById('rpc-count').value = '20'; document.getElementById('rpc-count').dispatchEvent(new Event('change')); true");
    page.screenshot("docs-sequence.png");
    page.press("q");
    page.screenshot("docs-queues.png");
    page.call(
        "Emulation.setEmulatedMedia",
        json!({ "features": [{ "name": "prefers-color-scheme", "value": "dark" }] }),
    );
    page.press("m");
    page.screenshot("docs-map-dark.png");
    page.press("s");
    page.screenshot("docs-sequence-dark.png");
}
