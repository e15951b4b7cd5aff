//! The web console in a real headless Chromium (Debian's `chromium`, which `.ci/run`
//! installs): the queue table shows a queue the test created, a message the test sends after
//! the page loaded appears in the live trace, and a screenshot is saved to
//! `target/test-artifacts/console.png`.
//!
//! The browser is driven through the Chrome DevTools Protocol on a websocket, so no
//! WebDriver or browser download is needed. Without Chromium the test is skipped locally
//! and fails under CI (`CI` set), where it must run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

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

/// A DevTools session on one page.
struct Page {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Page {
    fn attach(url: &str) -> Page {
        let (socket, _) = tungstenite::connect(url).expect("DevTools websocket");
        Page { socket, next_id: 1 }
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
        }
    }

    fn evaluate(&mut self, expression: &str) -> Value {
        self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        )["result"]["value"]
            .clone()
    }

    fn wait_for(&mut self, what: &str, expression: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.evaluate(expression) != json!(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One request on a fresh, logged-in connection, for the test's own traffic.
fn http(runtime: &tokio::runtime::Runtime, address: &str, method: &str, path: &str, body: &[u8]) {
    runtime.block_on(async {
        let mut raw = common::raw::tcp(address).await;
        raw.login("console-test").await;
        let response = raw.call(method, path, body).await;
        assert_eq!(response.status, 200, "{}", response.text());
    });
}

fn artifact_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/console.png")
}

#[test]
fn the_console_shows_queues_and_the_live_trace_in_chromium() {
    if !Path::new(CHROMIUM).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{CHROMIUM} is missing; .ci/run installs Debian's chromium"
        );
        eprintln!("skipped: {CHROMIUM} is not installed (apt-get install chromium)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (switch, address) = runtime.block_on(async {
        let switch = Switch::start(Config::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        switch.serve(listener);
        (switch, address)
    });
    http(&runtime, &address, "GET", "/persistent/console-test", b"");
    http(
        &runtime,
        &address,
        "POST",
        "/request/console-test/reply",
        b"queued-before",
    );

    let browser = Browser::launch();
    let mut page = Page::attach(&browser.page_websocket());
    page.call("Page.enable", json!({}));
    page.call(
        "Page.navigate",
        json!({ "url": format!("http://{address}/admin") }),
    );
    page.wait_for(
        "the queue row",
        r#"(() => { const row = document.querySelector('tr[data-queue="console-test"]');
                  return row !== null && row.cells[2].textContent === "1"; })()"#,
    );

    // Send once the page's trace long-poll is parked in the switch, so the row can only
    // appear through the live update.
    page.wait_for(
        "the first trace event",
        r#"document.querySelector('#trace tbody').rows.length >= 1"#,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while runtime.block_on(switch.stats()).unwrap().parked_traces == 0 {
        assert!(
            Instant::now() < deadline,
            "the page never long-polled /trace"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    http(
        &runtime,
        &address,
        "POST",
        "/request/console-test/reply",
        b"sent-while-watching",
    );
    page.wait_for(
        "the live trace row",
        r#"document.querySelector('#trace').textContent.includes('sent-while-watching')"#,
    );

    let screenshot = page.call("Page.captureScreenshot", json!({ "format": "png" }));
    let png = base64::engine::general_purpose::STANDARD
        .decode(screenshot["data"].as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = artifact_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot saved to {}", path.display());
}
