//! The operator surfaces the shell answers itself: the embedded web console (`/admin` and
//! the reference's `/js/…`, `/css/…` paths) with its data (`/admin/api/overview`, from the
//! sampler), `GET /metrics` and `GET /health`.
//!
//! The console's files are compiled into the binary, so it works offline and whatever the
//! working directory; a path is looked up in a fixed table, never on the file system, so
//! there is nothing to traverse.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::admission::Admission;
use super::client_view;
use super::sampler::Samples;

const INDEX_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

/// The console file for the raw path segments after the leading `/`, if there is one.
pub(crate) fn asset(segments: &[String]) -> Option<(&'static str, &'static str)> {
    let path: Vec<&str> = segments.iter().map(String::as_str).collect();
    let html = (INDEX_HTML, "text/html; charset=utf-8");
    let js = (CONSOLE_JS, "text/javascript; charset=utf-8");
    let css = (CONSOLE_CSS, "text/css; charset=utf-8");
    match path.as_slice() {
        ["admin"] | ["admin", ""] | ["admin", "index.html"] => Some(html),
        ["admin", "console.js"] | ["js", "console.js"] => Some(js),
        ["admin", "console.css"] | ["css", "console.css"] => Some(css),
        _ => None,
    }
}

/// The response for a console path: the sampler's overview, the clients' counts, a file, or
/// 404.
pub(crate) fn console(
    segments: &[String],
    samples: &Samples,
    admission: &Admission,
) -> Response<Full<Bytes>> {
    if segments == ["admin", "api", "overview"] {
        return typed(StatusCode::OK, samples.overview_json(), "application/json");
    }
    if segments == ["admin", "api", "clients"] {
        return typed(
            StatusCode::OK,
            client_view::clients_json(admission),
            "application/json",
        );
    }
    match asset(segments) {
        Some((body, content_type)) => typed(StatusCode::OK, body.to_owned(), content_type),
        None => typed(
            StatusCode::NOT_FOUND,
            format!("Not found: /{}", segments.join("/")),
            "text/plain; charset=utf-8",
        ),
    }
}

/// A response with a content type (the protocol's own replies carry none, as the
/// reference's; browsers and Prometheus want one).
pub(crate) fn typed(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/').skip(1).map(str::to_owned).collect()
    }

    #[test]
    fn only_the_embedded_files_are_served() {
        assert!(asset(&segments("/admin")).is_some());
        assert!(asset(&segments("/admin/")).is_some());
        assert!(asset(&segments("/js/console.js")).is_some());
        assert!(asset(&segments("/css/console.css")).is_some());
        assert!(asset(&segments("/admin/../../etc/passwd")).is_none());
        assert!(asset(&segments("/admin/%2e%2e/secret")).is_none());
        assert!(asset(&segments("/images/logo.png")).is_none());
    }

    #[test]
    fn the_overview_and_the_clients_are_json_and_other_api_paths_are_not_found() {
        let (commands, _receiver) = tokio::sync::mpsc::channel(1);
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let config = super::super::SamplerConfig {
            interval: std::time::Duration::ZERO,
            ..Default::default()
        };
        let samples = super::super::sampler::spawn(config, &commands, shutdown);
        let admission = Admission::new(super::super::ClientLimits::default());
        for path in ["/admin/api/overview", "/admin/api/clients"] {
            let response = console(&segments(path), &samples, &admission);
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        }
        let response = console(&segments("/admin/api/nothing"), &samples, &admission);
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
