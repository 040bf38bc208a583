//! The application: what each request means. It sees a parsed request and
//! what is known about its connection, and answers by writing a response or
//! by asking for a stream; it never touches a socket, a slab or a deadline
//! (the reactor and `streams` do), as `HttpService::call(req, &mut rsp)`
//! sits between may_minihttp's connection loop and the app.
//!
//! Two moments per request: [`admit`] on the head, before any body is read
//! (route, method, authorization, `100 Continue`; a subscribe's topics are
//! parsed and authorized here, so nothing is subscribed for a request that
//! will be refused), and [`respond`] once it is complete.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use ssehub_core::backplane::{
    IdempotencyKey, Origin, PublishFailure, Published, Reply, Revocation, Revoking, Submitted,
};
use ssehub_protocol::http::response::CONTINUE;
use ssehub_protocol::http::{BodyKind, Method, Request};
use ssehub_protocol::publish::{self, PublishError};
use ssehub_protocol::query::{self, Subscribe};
use ssehub_protocol::sse::Framing;

use crate::auth::{Credentials, Denied, PublishGrant, StreamGrant};
use crate::conn::Awaiting;
use crate::metrics::{self, Globals};
use crate::reactor::Shared;
use crate::response::{HttpError, write_cors, write_head};
use crate::ui;

/// The paths the hub serves.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /events`: subscribe.
    Events,
    /// `POST /publish`.
    Publish,
    /// `POST /disconnect`: end the streams of a token subject.
    Disconnect,
    /// `GET /healthz`: liveness.
    Healthz,
    /// `GET /readyz`: readiness for load balancers.
    Readyz,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /` and `GET /ssehub.js`: the live page and the client module (`--ui on`).
    Ui(ui::File),
    /// Anything else: 404.
    Unknown,
}

/// The route of a request, given the settings (`--ui off` leaves `/` and `/ssehub.js` unknown).
fn route_of(shared: &Shared, request: &Request<'_>) -> Route {
    match route(request.path()) {
        Route::Ui(_) if !shared.settings.ui => Route::Unknown,
        route => route,
    }
}

/// The route of a request path.
pub fn route(path: &[u8]) -> Route {
    match path {
        b"/events" => Route::Events,
        b"/publish" => Route::Publish,
        b"/disconnect" => Route::Disconnect,
        b"/healthz" => Route::Healthz,
        b"/readyz" => Route::Readyz,
        b"/metrics" => Route::Metrics,
        b"/" => Route::Ui(ui::File::Page),
        b"/ssehub.js" => Route::Ui(ui::File::Client),
        _ => Route::Unknown,
    }
}

/// What the application knows about the connection a request came on.
#[derive(Copy, Clone, Debug)]
pub struct Peer {
    /// The request's origin: worker, slot and stamp (for backplane answers).
    pub origin: Origin,
    /// The peer address is loopback.
    pub loopback: bool,
    /// Accepted past `--max-connections`.
    pub over_limit: bool,
}

/// What [`admit`] decided about a head.
#[derive(Debug)]
pub enum Admission {
    /// Read the body (if any), then [`respond`].
    Proceed,
    /// Parsed and authorized: [`respond`] gets it back with the complete request.
    Admitted(Box<Admitted>),
}

/// What a head was admitted as, kept until the request is complete.
#[derive(Debug)]
pub enum Admitted {
    /// A subscribe (its token already taken out), and what its token allows.
    Subscribe(Subscribe, Option<StreamGrant>),
    /// A publish, and which topics it may reach (checked once the body is decoded).
    Publish(PublishGrant),
}

/// How a complete request was answered.
#[derive(Debug)]
pub enum Answer {
    /// A complete response was written; the connection may carry more requests.
    Done,
    /// A response was written; close once it is out.
    Close,
    /// Refused: answer with the error and close.
    Fail(HttpError),
    /// Turn the connection into an event stream.
    Stream(StreamStart),
    /// The backplane answers later; nothing else happens on the connection until then.
    Pending(Awaiting),
    /// The event queues are full: nothing was published; call [`respond`]
    /// again with the same request (and this admission) once they have room.
    Busy(Box<Admitted>),
}

/// A subscribe that passed every check.
#[derive(Debug)]
pub struct StreamStart {
    /// Topics and the query's `lastEventId`.
    pub subscribe: Box<Subscribe>,
    /// The id to resume after (the header wins over the query), raw.
    pub resume: Option<Vec<u8>>,
    /// The CORS origin to answer with.
    pub cors: Option<String>,
    /// The body framing: chunked for HTTP/1.1, close-delimited for HTTP/1.0.
    pub framing: Framing,
    /// Set when the stream rests on a token: it ends when the token expires.
    pub grant: Option<StreamGrant>,
}

/// The CORS origin to answer `request` with, if allowed.
pub fn cors(shared: &Shared, request: &Request<'_>) -> Option<String> {
    shared.settings.cors.allow(request.header("origin")).map(str::to_owned)
}

/// Decides on a head before its body is read; writes `100 Continue` into `out` when due.
pub fn admit(shared: &Shared, request: &Request<'_>, peer: &Peer, out: &mut Vec<u8>) -> Result<Admission, HttpError> {
    let head = request.head;
    for field in ["last-event-id", "authorization", "origin", "content-type", "cookie", "idempotency-key"] {
        if request.unique_header(field).is_err() {
            return Err(HttpError::BadRequest(duplicate_message(field)));
        }
    }
    let route = route_of(shared, request);
    let allowed = match route {
        Route::Events => matches!(head.method, Method::Get | Method::Options),
        Route::Publish | Route::Disconnect => matches!(head.method, Method::Post | Method::Options),
        Route::Healthz | Route::Readyz | Route::Metrics | Route::Ui(_) => head.method == Method::Get,
        Route::Unknown => return Err(HttpError::NotFound),
    };
    if !allowed {
        return Err(HttpError::MethodNotAllowed(match route {
            Route::Events => "GET, OPTIONS",
            Route::Publish | Route::Disconnect => "POST, OPTIONS",
            _ => "GET",
        }));
    }
    let mut credentials = Credentials {
        authorization: request.header("authorization"),
        query_token: None,
        cookie: request.header("cookie"),
        loopback: peer.loopback,
    };
    match (route, head.method) {
        (Route::Publish | Route::Disconnect, Method::Post) => {
            let grant = shared.authorizer.publish(&credentials).inspect_err(|&denied| count(shared, peer, denied))?;
            if peer.over_limit {
                return Err(HttpError::Unavailable("too many connections"));
            }
            if head.expect_continue && head.http11 && head.body != BodyKind::None {
                out.extend_from_slice(CONTINUE);
            }
            Ok(Admission::Admitted(Box::new(Admitted::Publish(grant))))
        }
        (Route::Events, Method::Get) => {
            let mut subscribe = query::parse_subscribe(request.query().unwrap_or_default())
                .map_err(|error| HttpError::BadRequest(error.detail()))?;
            let token = subscribe.token.take();
            credentials.query_token = token.as_ref().map(|t| &t.0[..]);
            let grant = shared
                .authorizer
                .subscribe(&credentials, &subscribe.topics)
                .inspect_err(|&denied| count(shared, peer, denied))?;
            Ok(Admission::Admitted(Box::new(Admitted::Subscribe(subscribe, grant))))
        }
        _ => Ok(Admission::Proceed),
    }
}

/// Counts a token refusal by reason.
fn count(shared: &Shared, peer: &Peer, denied: Denied) {
    if let Some(reason) = denied.metric_reason() {
        shared.stats[peer.origin.worker].auth_failure(reason);
    }
}

fn duplicate_message(field: &str) -> &'static str {
    match field {
        "last-event-id" => "duplicate Last-Event-ID",
        "authorization" => "duplicate Authorization",
        "origin" => "duplicate Origin",
        "cookie" => "duplicate Cookie",
        "idempotency-key" => "duplicate Idempotency-Key",
        _ => "duplicate Content-Type",
    }
}

/// Answers a complete request, writing any response into `out`.
pub fn respond(
    shared: &Shared,
    request: &Request<'_>,
    peer: &Peer,
    admitted: Option<Box<Admitted>>,
    out: &mut Vec<u8>,
) -> Answer {
    let head = request.head;
    let keep_alive = head.keep_alive;
    let text = "text/plain; charset=utf-8";
    match (route_of(shared, request), head.method) {
        (Route::Events, Method::Get) => {
            let Some(Admitted::Subscribe(subscribe, grant)) = admitted.map(|a| *a) else {
                return Answer::Fail(HttpError::BadRequest("not admitted"));
            };
            // The header wins: a browser sends it on reconnect with the latest
            // id, while a `lastEventId` in the URL still holds the first one.
            let resume = match request.header("last-event-id").filter(|id| !id.is_empty()) {
                Some(id) => Some(id.to_vec()),
                None => subscribe.last_event_id.clone(),
            };
            let framing = if request.head.http11 { Framing::Chunked } else { Framing::Plain };
            let subscribe = Box::new(subscribe);
            Answer::Stream(StreamStart { subscribe, resume, cors: cors(shared, request), framing, grant })
        }
        (Route::Publish, Method::Post) => {
            let Some(Admitted::Publish(grant)) = admitted.map(|a| *a) else {
                return Answer::Fail(HttpError::BadRequest("not admitted"));
            };
            match publish(shared, request, peer, &grant, out) {
                Some(answer) => answer,
                None => Answer::Busy(Box::new(Admitted::Publish(grant))),
            }
        }
        (Route::Disconnect, Method::Post) => {
            let Some(Admitted::Publish(grant)) = admitted.map(|a| *a) else {
                return Answer::Fail(HttpError::BadRequest("not admitted"));
            };
            disconnect(shared, request, peer, &grant)
        }
        (_, Method::Options) => {
            preflight(out, cors(shared, request).as_deref(), keep_alive);
            Answer::Done
        }
        (Route::Healthz, _) => {
            let body = match shared.backplane.down_reason() {
                Some(why) => format!("degraded: {why}\n"),
                None => "ok\n".to_owned(),
            };
            reply(out, 200, text, body.as_bytes(), keep_alive, cors(shared, request).as_deref())
        }
        (Route::Readyz, _) => {
            let cors = cors(shared, request);
            match shared.backplane.down_reason() {
                Some(why) => {
                    reply(out, 503, text, format!("not ready: {why}\n").as_bytes(), keep_alive, cors.as_deref())
                }
                None => reply(out, 200, text, b"ready\n", keep_alive, cors.as_deref()),
            }
        }
        (Route::Metrics, _) => {
            let (history, topics_subscribed) = shared.bus.history_stats();
            let globals = Globals {
                events_published: shared.bus.published(),
                uptime: shared.started.elapsed(),
                max_connections: shared.settings.reactor.max_connections,
                backplane: shared.backplane.metrics(),
                history,
                history_budget: shared.settings.streams.history_memory,
                topics_subscribed,
                io_backend: shared.io_backend,
            };
            let body = metrics::render(&shared.stats, &globals);
            let content_type = "text/plain; version=0.0.4; charset=utf-8";
            reply(out, 200, content_type, body.as_bytes(), keep_alive, cors(shared, request).as_deref())
        }
        (Route::Ui(file), _) => {
            ui::write(out, file, request.header("if-none-match"), keep_alive, cors(shared, request).as_deref());
            Answer::Done
        }
        _ => Answer::Fail(HttpError::NotFound),
    }
}

/// Writes a complete response.
fn reply(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    keep_alive: bool,
    cors: Option<&str>,
) -> Answer {
    write_head(out, status, content_type, body.len(), keep_alive, cors);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Answer::Done
}

fn preflight(out: &mut Vec<u8>, cors: Option<&str>, keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
    write_cors(out, cors);
    if cors.is_some_and(|origin| origin != "*") {
        out.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\n");
    }
    out.extend_from_slice(
        b"Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
          Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n\
          Access-Control-Max-Age: 86400\r\n",
    );
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A publish; `None` when the event queues are full (nothing was published:
/// the caller tries again with the same request).
fn publish(
    shared: &Shared,
    request: &Request<'_>,
    peer: &Peer,
    grant: &PublishGrant,
    out: &mut Vec<u8>,
) -> Option<Answer> {
    let content_type = request.header("content-type");
    let publications = match publish::decode(content_type, request.body()) {
        Ok(publications) => publications,
        Err(PublishError::MediaType) => return Some(Answer::Fail(HttpError::UnsupportedMediaType)),
        Err(PublishError::Invalid(why)) => return Some(Answer::Fail(HttpError::BadRequest(why))),
    };
    // Every topic of every event, or nothing is published.
    if let Err(denied) = grant.allows(publications.iter().flat_map(|p| p.topics.iter().map(String::as_str))) {
        count(shared, peer, denied);
        return Some(Answer::Fail(HttpError::Denied(denied)));
    }
    let key = match idempotency_key(request.header("idempotency-key"), content_type, request.body()) {
        Ok(key) => key.filter(|_| !shared.settings.publish.idempotency_window.is_zero()),
        Err(error) => return Some(Answer::Fail(error)),
    };
    Some(match shared.backplane.publish(peer.origin, publications, key) {
        Submitted::Published(published) => {
            let cors = cors(shared, request);
            write_published(out, &published, request.head.keep_alive, cors.as_deref());
            Answer::Done
        }
        Submitted::Pending => {
            Answer::Pending(Awaiting { keep_alive: request.head.keep_alive, cors: cors(shared, request) })
        }
        Submitted::Failed(PublishFailure::Full) => return None,
        Submitted::Failed(failure) => Answer::Fail(publish_failure(failure)),
    })
}

/// Longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The `Idempotency-Key` of a publish, with the fingerprint of what it
/// publishes (SHA-256 of the media type and the body, first 16 bytes): a
/// retry sends the same bytes, a reuse for something else does not.
pub fn idempotency_key(
    value: Option<&[u8]>,
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, HttpError> {
    let Some(value) = value else { return Ok(None) };
    let visible = |b: &u8| (0x21..=0x7e).contains(b);
    if value.is_empty() || value.len() > MAX_IDEMPOTENCY_KEY || !value.iter().all(visible) {
        return Err(HttpError::BadRequest("Idempotency-Key must be 1-128 visible ASCII characters"));
    }
    let key = String::from_utf8_lossy(value).into();
    let media = content_type.map_or(&b""[..], |v| v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii());
    let mut hash = Sha256::new();
    hash.update(media.to_ascii_lowercase());
    hash.update([0]);
    hash.update(body);
    let digest = hash.finalize();
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&digest[..16]);
    Ok(Some(IdempotencyKey { key, fingerprint }))
}

/// `POST /disconnect` with `sub=S` (form or JSON): every worker ends the
/// streams opened with a token of subject S, each after `ssehub-expired`
/// (`revoked`); the answer is how many this node ended. In cluster mode the
/// revocation is announced on the stream first, so every node ends its own. Needs publish credentials that
/// cover everything (`--publish-token`, or a grant covering `**`).
fn disconnect(shared: &Shared, request: &Request<'_>, peer: &Peer, grant: &PublishGrant) -> Answer {
    let everything = match grant {
        PublishGrant::All => true,
        PublishGrant::Topics(grants) => crate::auth::covered(grants, "**"),
    };
    if !everything {
        count(shared, peer, Denied::PublishNotGranted);
        return Answer::Fail(HttpError::Denied(Denied::PublishNotGranted));
    }
    let subject = match disconnect_subject(request.header("content-type"), request.body()) {
        Ok(subject) => subject,
        Err(error) => return Answer::Fail(error),
    };
    let revocation = Arc::new(Revocation::new(subject.into(), Some(peer.origin), shared.bus.workers()));
    match shared.backplane.revoke(Arc::clone(&revocation)) {
        Revoking::Local => {
            for worker in 0..shared.bus.workers() {
                shared.bus.reply(worker, Reply::Revoke(Arc::clone(&revocation)));
            }
        }
        Revoking::Pending => {}
        Revoking::Failed(failure) => return Answer::Fail(publish_failure(failure)),
    }
    Answer::Pending(Awaiting { keep_alive: request.head.keep_alive, cors: cors(shared, request) })
}

/// The `sub` of a disconnect body: a form field or a JSON string member.
fn disconnect_subject(content_type: Option<&[u8]>, body: &[u8]) -> Result<String, HttpError> {
    let media = content_type.map(|v| v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii());
    let subject = match media {
        Some(m) if m.eq_ignore_ascii_case(b"application/json") => {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|_| HttpError::BadRequest("malformed JSON"))?;
            value.get("sub").and_then(|s| s.as_str()).map(str::to_owned)
        }
        None => None,
        Some(m) if m.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") => {
            let mut found = None;
            for (name, value) in ssehub_protocol::form::pairs(body) {
                if name == b"sub" {
                    found =
                        Some(ssehub_protocol::form::decode_text(value).map_err(|e| HttpError::BadRequest(e.detail()))?);
                }
            }
            found
        }
        Some(_) => return Err(HttpError::UnsupportedMediaType),
    };
    match subject {
        Some(subject) if !subject.is_empty() => Ok(subject),
        _ => Err(HttpError::BadRequest("disconnect needs sub=<token subject>")),
    }
}

/// The answer to a disconnect: how many streams ended.
pub fn write_revoked(out: &mut Vec<u8>, closed: usize, keep_alive: bool, cors: Option<&str>) {
    let body = format!("{closed}\n");
    write_head(out, 200, "text/plain; charset=utf-8", body.len(), keep_alive, cors);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// The refusal a failed publish is answered with.
pub fn publish_failure(failure: PublishFailure) -> HttpError {
    match failure {
        PublishFailure::Unavailable(why) => HttpError::Unavailable(why),
        PublishFailure::Full => HttpError::Unavailable("event queues are full; retry"),
        PublishFailure::Unknown(why) => HttpError::Unknown(why),
        PublishFailure::Conflict => HttpError::Conflict,
    }
}

/// The publish answer: `200`, one id per line; `Idempotent-Replayed: true`
/// when an earlier publish under the same key gave them.
pub fn write_published(out: &mut Vec<u8>, published: &Published, keep_alive: bool, cors: Option<&str>) {
    let mut body = String::with_capacity(published.ids.len() * 24);
    for id in &published.ids {
        body.push_str(&id.to_string());
        body.push('\n');
    }
    write_head(out, 200, "text/plain; charset=utf-8", body.len(), keep_alive, cors);
    if published.replayed {
        out.extend_from_slice(b"Idempotent-Replayed: true\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_visible_ascii_and_fingerprint_media_type_and_body() {
        let key = |value: &[u8], media: &[u8], body: &[u8]| idempotency_key(Some(value), Some(media), body);
        let form = b"application/x-www-form-urlencoded";
        let a = key(b"k-1", form, b"topic=t&data=x").unwrap().unwrap();
        assert_eq!(&*a.key, "k-1");
        let same = key(b"k-1", b"Application/X-WWW-Form-Urlencoded; charset=utf-8", b"topic=t&data=x").unwrap();
        assert_eq!(same.map(|k| k.fingerprint), Some(a.fingerprint), "parameters and case are not the body");
        let other = key(b"k-1", form, b"topic=t&data=y").unwrap().unwrap();
        assert_ne!(other.fingerprint, a.fingerprint);
        let json = key(b"k-1", b"application/json", b"topic=t&data=x").unwrap().unwrap();
        assert_ne!(json.fingerprint, a.fingerprint);
        assert_eq!(idempotency_key(None, Some(form), b"x"), Ok(None));
        for bad in [&b""[..], b"a b", b"\x7f", b"\xc3\xa9", &[b'k'; 129]] {
            assert!(key(bad, form, b"x").is_err(), "{bad:?}");
        }
        assert!(key(&[b'~'; 128], form, b"x").is_ok());
    }

    #[test]
    fn routes_are_exact_paths() {
        let cases: &[(&[u8], Route)] = &[
            (b"/events", Route::Events),
            (b"/publish", Route::Publish),
            (b"/disconnect", Route::Disconnect),
            (b"/healthz", Route::Healthz),
            (b"/readyz", Route::Readyz),
            (b"/metrics", Route::Metrics),
            (b"/events/", Route::Unknown),
            (b"/", Route::Ui(ui::File::Page)),
            (b"/ssehub.js", Route::Ui(ui::File::Client)),
            (b"/index.html", Route::Unknown),
            (b"*", Route::Unknown),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), *want, "{:?}", String::from_utf8_lossy(path));
        }
    }
}
