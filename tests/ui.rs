//! The routes of the browser side over raw HTTP (the browser suite,
//! `tests/browser.rs`, runs them in Chromium): `GET /` and `GET /ssehub.js`
//! with their types, policy, validators and CORS; the methods they refuse;
//! `--ui off`.

mod common;

use common::{Server, body_of, header, status_of};

fn get(server: &Server, path: &str, headers: &str) -> String {
    server.raw(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes())
}

#[test]
fn page_and_module_are_served_with_their_headers() {
    let server = Server::start(&["--cors-origin", "https://app.example"]);
    let page = get(&server, "/?topic=news", "Origin: https://app.example\r\n");
    assert_eq!(status_of(&page), 200, "{page}");
    assert_eq!(header(&page, "content-type"), Some("text/html; charset=utf-8"));
    assert!(header(&page, "content-security-policy").is_some_and(|p| p.starts_with("default-src 'none'; ")));
    assert_eq!(header(&page, "access-control-allow-origin"), None, "the page is for the hub's own origin");
    assert!(body_of(&page).contains("<script type=\"module\">"));

    let module = get(&server, "/ssehub.js", "Origin: https://app.example\r\n");
    assert_eq!(status_of(&module), 200);
    assert_eq!(header(&module, "content-type"), Some("text/javascript; charset=utf-8"));
    assert_eq!(header(&module, "access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(body_of(&module), include_str!("../clients/js/ssehub.js"));
    let etag = header(&module, "etag").expect("an ETag").to_owned();
    let again = get(&server, "/ssehub.js", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status_of(&again), 304, "{again}");
    assert_eq!(body_of(&again), "");

    for (request, status) in [
        ("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", 405),
        ("HEAD /ssehub.js HTTP/1.1\r\nHost: t\r\n\r\n", 405),
        ("GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n", 404),
    ] {
        let answer = server.raw(request.as_bytes());
        assert_eq!(status_of(&answer), status, "{request:?}: {answer}");
    }
}

#[test]
fn ui_off_removes_both() {
    let server = Server::start(&["--ui", "off"]);
    for path in ["/", "/ssehub.js"] {
        assert_eq!(status_of(&get(&server, path, "")), 404, "{path}");
    }
    assert_eq!(status_of(&get(&server, "/healthz", "")), 200);
}

#[test]
fn metrics_tell_version_and_uptime() {
    let server = Server::start(&[]);
    let text = get(&server, "/metrics", "");
    let version = format!("ssehub_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"));
    assert!(body_of(&text).contains(&version), "{text}");
    assert!(server.metric("ssehub_uptime_seconds") < 60);
}
