//! The browser side the hub serves itself: the live page at `GET /` and the
//! client module at `GET /ssehub.js`, both compiled into the binary (no file
//! is read at run time, nothing is fetched from elsewhere). `--ui off`
//! removes both routes.
//!
//! The page reads `/metrics`, and its try-it panel uses `/events` and
//! `/publish` with whatever credentials the person pastes: it can show or do
//! nothing those endpoints do not already allow. Its HTML, style and script
//! are three embedded files put together once; the response carries a
//! Content-Security-Policy that allows only that style and script (by
//! SHA-256), modules from this origin and connections to it, so text that
//! ever reached the DOM as markup still could not run.

use std::sync::OnceLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use ssehub_protocol::http::response::{write_header, write_status_line};

use crate::response::{write_cors, write_head};

/// The client module, served as is (it is also `clients/js/ssehub.js` in the repository).
pub const CLIENT: &str = include_str!("../clients/js/ssehub.js");
/// The page's HTML, with [`STYLE_SLOT`] and [`SCRIPT_SLOT`] where its style and script go.
const HTML: &str = include_str!("ui/index.html");
/// The page's style.
const STYLE: &str = include_str!("ui/page.css");
/// The page's script (a module; it imports `/ssehub.js`).
const SCRIPT: &str = include_str!("ui/page.js");
/// Marks where [`STYLE`] goes in [`HTML`].
const STYLE_SLOT: &str = "<style></style>";
/// Marks where [`SCRIPT`] goes in [`HTML`].
const SCRIPT_SLOT: &str = "<script type=\"module\"></script>";

/// A response body built once, with the header values that depend on it.
struct Asset {
    body: String,   // what is sent
    etag: String,   // `"<16 hex digits of its SHA-256>"`
    policy: String, // the Content-Security-Policy (empty: none)
}

fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn csp_hash(source: &str) -> String {
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(source.as_bytes())))
}

fn page() -> &'static Asset {
    static PAGE: OnceLock<Asset> = OnceLock::new();
    PAGE.get_or_init(|| {
        let body = HTML.replacen(STYLE_SLOT, &format!("<style>{STYLE}</style>"), 1).replacen(
            SCRIPT_SLOT,
            &format!("<script type=\"module\">{SCRIPT}</script>"),
            1,
        );
        let policy = format!(
            "default-src 'none'; script-src 'self' {}; style-src {}; connect-src 'self'; worker-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            csp_hash(SCRIPT),
            csp_hash(STYLE)
        );
        Asset { etag: etag(&body), body, policy }
    })
}

fn client() -> &'static Asset {
    static CLIENT_ASSET: OnceLock<Asset> = OnceLock::new();
    CLIENT_ASSET.get_or_init(|| Asset { etag: etag(CLIENT), body: CLIENT.to_owned(), policy: String::new() })
}

/// Which embedded file a request asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum File {
    /// `/`: the live page.
    Page,
    /// `/ssehub.js`: the client module.
    Client,
}

/// Writes the response for `file`: `200` with the body, or `304` when
/// `if_none_match` names the current version. The module gets CORS (`cors`,
/// from `--cors-origin`) so pages of other origins can `import()` it; the page
/// never does.
pub fn write(out: &mut Vec<u8>, file: File, if_none_match: Option<&[u8]>, keep_alive: bool, cors: Option<&str>) {
    let (asset, content_type, cors) = match file {
        File::Page => (page(), "text/html; charset=utf-8", None),
        File::Client => (client(), "text/javascript; charset=utf-8", cors),
    };
    let fresh = if_none_match.is_some_and(|tags| {
        tags.split(|&b| b == b',').any(|tag| {
            let tag = tag.trim_ascii();
            tag == asset.etag.as_bytes() || tag.strip_prefix(b"W/") == Some(asset.etag.as_bytes())
        })
    });
    if fresh {
        // No Content-Length: in a 304 it would describe the representation, not this empty body.
        write_status_line(out, 304);
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        write_cors(out, cors);
    } else {
        write_head(out, 200, content_type, asset.body.len(), keep_alive, cors);
        write_header(out, "X-Content-Type-Options", b"nosniff");
        if !asset.policy.is_empty() {
            write_header(out, "Content-Security-Policy", asset.policy.as_bytes());
            write_header(out, "Referrer-Policy", b"no-referrer");
        }
    }
    write_header(out, "ETag", asset.etag.as_bytes());
    // Revalidated on every load (a 304 when unchanged): an upgraded hub serves its new page at once.
    write_header(out, "Cache-Control", b"no-cache");
    out.extend_from_slice(b"\r\n");
    if !fresh {
        out.extend_from_slice(asset.body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(file: File, if_none_match: Option<&[u8]>, cors: Option<&str>) -> String {
        let mut out = Vec::new();
        write(&mut out, file, if_none_match, true, cors);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn page_is_assembled_once_with_its_hashes() {
        for slot in [STYLE_SLOT, SCRIPT_SLOT] {
            assert_eq!(HTML.matches(slot).count(), 1, "{slot} once in index.html");
        }
        let page = page();
        assert!(page.body.contains(STYLE) && page.body.contains(SCRIPT));
        assert!(page.policy.contains(&csp_hash(SCRIPT)) && page.policy.contains(&csp_hash(STYLE)));
        // The known SHA-256 of "abc", so the hash is the one browsers compute.
        assert_eq!(csp_hash("abc"), "'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0='");
    }

    #[test]
    fn responses_carry_type_cache_and_cors_rules() {
        let text = response(File::Page, None, Some("https://app.example"));
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Security-Policy: default-src 'none'; "));
        assert!(!text.contains("Access-Control-Allow-Origin"), "the page is never for other origins");
        let text = response(File::Client, None, Some("https://app.example"));
        assert!(text.contains("\r\nContent-Type: text/javascript; charset=utf-8\r\n"));
        assert!(text.contains("\r\nAccess-Control-Allow-Origin: https://app.example\r\nVary: Origin\r\n"));
        assert!(text.ends_with(CLIENT));
        let etag = client().etag.clone();
        let cases: &[(String, u16)] = &[
            (etag.clone(), 304),
            (format!("W/{etag}"), 304),
            (format!("\"x\", {etag}"), 304),
            ("\"0000000000000000\"".to_owned(), 200),
            ("*x".to_owned(), 200),
        ];
        for (tag, status) in cases {
            let text = response(File::Client, Some(tag.as_bytes()), None);
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{tag}: {text}");
            if *status == 304 {
                assert!(text.ends_with("\r\n\r\n") && !text.contains("Content-Length"), "{text}");
            }
        }
    }
}
