//! Private topics: JWT grants for subscribers and publishers, minted here as
//! an app would mint them (HS256 with PyJWT, RS256/ES256 with a key pair).
//! Every refusal is checked for its status, its reason in the body, and that
//! the token is never echoed.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Server, body_of, header, status_of};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "test-secret-0123456789abcdef";
/// `--publish-token` of every hub here: with JWT auth on, loopback alone may not publish.
const PUBLISH_TOKEN: &str = "full-access";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn key_path(name: &str) -> String {
    format!("{KEYS}/{name}")
}

/// A token for `claims`, signed as `alg` with the test keys.
fn mint(alg: Algorithm, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&std::fs::read(key_path("es256.key.pem")).unwrap()).unwrap(),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&std::fs::read(key_path("rs256.key.pem")).unwrap()).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    encode(&Header::new(alg), claims, &key).expect("mint")
}

/// Claims valid for a minute with these grants.
fn grants(subscribe: &[&str], publish: &[&str]) -> Value {
    json!({"sub": "42", "exp": now() + 60, "ssehub": {"subscribe": subscribe, "publish": publish}})
}

fn hub(extra: &[&str]) -> Server {
    let mut args = vec!["--jwt-secret", SECRET, "--public-topic", "news,public/**", "--publish-token", PUBLISH_TOKEN];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// Publishes a form with the publish token; returns the ids.
fn publish(server: &Server, form: &str) -> Vec<String> {
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
        bearer(PUBLISH_TOKEN),
        form.len()
    );
    let response = server.raw(request.as_bytes());
    assert_eq!(status_of(&response), 200, "{response}");
    body_of(&response).lines().map(str::to_owned).collect()
}

/// A subscribe that the server refuses: (status, whole response).
fn refused(server: &Server, query: &str, headers: &str) -> (u16, String) {
    let request = format!("GET /events?{query} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n");
    let response = server.raw(request.as_bytes());
    (status_of(&response), response)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

#[test]
fn subscribing_needs_a_token_covering_every_private_topic() {
    let server = hub(&[]);
    let token = mint(Algorithm::HS256, &grants(&["user/42/**", "team/*"], &[]));

    // Public topics need nothing.
    let mut open = server.subscribe("topic=news&topic=public/a/b");
    assert_eq!(open.status(), 200);

    // A private topic without a token: 401, and nothing subscribed.
    let (status, response) = refused(&server, "topic=user/42/inbox", "");
    assert_eq!(status, 401, "{response}");
    assert!(body_of(&response).contains("private"), "{response}");
    assert_eq!(header(&response, "www-authenticate"), Some("Bearer"));
    // One private topic among public ones is enough to need a token.
    assert_eq!(refused(&server, "topic=news&topic=user/42/inbox", "").0, 401);

    // Covered: topics under a `**` grant, a topic and a pattern under `team/*`.
    for query in ["topic=user/42/inbox", "topic=user/42/a/b&topic=news", "topic=team/7", "topic=team/*"] {
        let sub = server.subscribe_with(query, &bearer(&token));
        assert_eq!(sub.status(), 200, "{query}");
    }
    // Not covered: another user, a deeper team topic, a pattern wider than the grant.
    for query in ["topic=user/43/inbox", "topic=team/7/x", "topic=team/**", "topic=user/42/inbox&topic=user/4"] {
        let (status, response) = refused(&server, query, &bearer(&token));
        assert_eq!(status, 403, "{query}: {response}");
        assert!(body_of(&response).contains("grants"), "{response}");
        assert!(!response.contains(&token), "the token is never echoed");
    }

    // A granted stream delivers.
    let mut private = server.subscribe_with("topic=user/42/inbox", &bearer(&token));
    publish(&server, "topic=user/42/inbox&data=hello");
    assert_eq!(private.next_event().data, "hello");
    publish(&server, "topic=news&data=for-all");
    assert_eq!(open.next_event().data, "for-all");

    assert_eq!(server.metric("ssehub_auth_failures_total{reason=\"missing\"}"), 2);
    assert_eq!(server.metric("ssehub_auth_failures_total{reason=\"forbidden\"}"), 4);
}

#[test]
fn the_token_comes_from_the_header_then_the_query_then_the_cookie() {
    let server = hub(&["--jwt-cookie", "hub"]);
    let good = mint(Algorithm::HS256, &grants(&["user/42/**"], &[]));
    let topic = "topic=user/42/x";

    let mut by_query = server.subscribe(&format!("{topic}&token={good}"));
    assert_eq!(by_query.status(), 200);
    let by_cookie = server.subscribe_with(topic, &format!("Cookie: a=1; hub={good}; b=2\r\n"));
    assert_eq!(by_cookie.status(), 200);
    // The cookie under another name is no token.
    assert_eq!(refused(&server, topic, &format!("Cookie: ssehub_token={good}\r\n")).0, 401);
    // First found wins, and a bad one is never skipped for a good one behind it.
    let (status, response) = refused(&server, &format!("{topic}&token={good}"), &bearer("not.a.token"));
    assert_eq!(status, 401, "{response}");
    assert!(!response.contains("not.a.token"));
    assert_eq!(refused(&server, topic, &format!("Cookie: hub={good}\r\n{}", bearer("x.y.z"))).0, 401);

    // The token parameter was not taken for a topic (it would not be
    // covered, so the subscribe would have been 403); the stream delivers.
    publish(&server, "topic=user/42/x&data=one");
    assert_eq!(by_query.next_event().data, "one");
}

#[test]
fn bad_tokens_are_refused_and_never_taken_for_no_token() {
    let server = hub(&["--jwt-audience", "hub", "--jwt-issuer", "app", "--jwt-leeway", "5"]);
    let topic = "topic=user/42/x";
    let base =
        || json!({"sub": "42", "aud": "hub", "iss": "app", "exp": now() + 60, "ssehub": {"subscribe": ["user/42/**"]}});
    let with = |key: &str, value: Value| {
        let mut claims = base();
        claims[key] = value;
        claims
    };
    let good = mint(Algorithm::HS256, &base());
    assert_eq!(server.subscribe_with(topic, &bearer(&good)).status(), 200);

    let mut without_exp = base();
    without_exp.as_object_mut().unwrap().remove("exp");
    let (head, payload, signature) = {
        let mut parts = good.split('.');
        (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
    };
    let other_payload = mint(Algorithm::HS256, &with("sub", json!("43"))).split('.').nth(1).unwrap().to_owned();
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
    // HS256 signed with the RSA public key's PEM as the secret: the classic
    // algorithm confusion, for a server that also has that public key.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &base(),
        &EncodingKey::from_secret(&std::fs::read(key_path("rs256.pub.pem")).unwrap()).unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", mint(Algorithm::HS256, &with("exp", json!(now() - 60))), "expired"),
        ("not yet valid", mint(Algorithm::HS256, &with("nbf", json!(now() + 60))), "not valid yet"),
        ("issued in the future", mint(Algorithm::HS256, &with("iat", json!(now() + 60))), "not valid yet"),
        ("wrong audience", mint(Algorithm::HS256, &with("aud", json!("other"))), "audience"),
        ("wrong issuer", mint(Algorithm::HS256, &with("iss", json!("evil"))), "issuer"),
        ("no exp", mint(Algorithm::HS256, &without_exp), "malformed"),
        ("alg none", format!("{none_header}.{payload}."), "malformed"),
        ("alg none, signature kept", format!("{none_header}.{payload}.{signature}"), "malformed"),
        ("tampered payload", format!("{head}.{other_payload}.{signature}"), "malformed"),
        ("truncated signature", format!("{head}.{payload}.{}", &signature[..signature.len() - 4]), "malformed"),
        (
            "another secret",
            encode(&Header::default(), &base(), &EncodingKey::from_secret(b"nope").unwrap()).unwrap(),
            "malformed",
        ),
        ("algorithm confusion", confused, "malformed"),
        ("grant not a list", mint(Algorithm::HS256, &with("ssehub", json!({"subscribe": "user/42/**"}))), "malformed"),
        ("garbage", "garbage".into(), "malformed"),
    ];
    for (what, token, reason) in &cases {
        let (status, response) = refused(&server, topic, &bearer(token));
        assert_eq!(status, 401, "{what}: {response}");
        assert!(body_of(&response).contains(reason), "{what}: {response}");
        assert!(!response.contains(token.as_str()), "{what}: the token is never echoed");
        // Where a token is not needed, a bad one is still refused.
        assert_eq!(refused(&server, "topic=news", &bearer(token)).0, 401, "{what} on a public topic");
    }
    assert_eq!(server.metric("ssehub_auth_failures_total{reason=\"expired\"}"), 2);
}

#[test]
fn public_keys_and_several_secrets_verify_for_rotation() {
    let es = key_path("es256.pub.pem");
    let rs = key_path("rs256.pub.pem");
    let server = Server::start(&[
        "--publish-token",
        PUBLISH_TOKEN,
        "--jwt-secret",
        "old-secret",
        "--jwt-secret",
        SECRET,
        "--jwt-public-key",
        &es,
        "--jwt-public-key",
        &rs,
    ]);
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512, Algorithm::ES256, Algorithm::RS256] {
        let token = mint(alg, &grants(&["t"], &[]));
        assert_eq!(server.subscribe_with("topic=t", &bearer(&token)).status(), 200, "{alg:?}");
    }
    // An ES256 token whose signature is an RS256 one's: refused.
    let es_token = mint(Algorithm::ES256, &grants(&["t"], &[]));
    let rs_signature = mint(Algorithm::RS256, &grants(&["t"], &[])).rsplit('.').next().unwrap().to_owned();
    let (body, _) = es_token.rsplit_once('.').unwrap();
    assert_eq!(refused(&server, "topic=t", &bearer(&format!("{body}.{rs_signature}"))).0, 401);
}

#[test]
fn a_bad_key_file_stops_the_server_at_start() {
    let bad = std::env::temp_dir().join(format!("ssehub-bad-key-{}.pem", std::process::id()));
    std::fs::write(&bad, "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
        .args(["--listen", "127.0.0.1:0", "--jwt-public-key"])
        .arg(&bad)
        .output()
        .expect("run ssehub");
    let _ = std::fs::remove_file(&bad);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "it never listens");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--jwt-public-key"));
}

#[test]
fn an_open_stream_ends_with_ssehub_expired_when_its_token_expires() {
    let server = hub(&["--jwt-leeway", "0"]);
    let claims = json!({"exp": now() + 2, "ssehub": {"subscribe": ["user/42/**"]}});
    let token = mint(Algorithm::HS256, &claims);
    let mut sub = server.subscribe_with("topic=user/42/x", &bearer(&token));
    assert_eq!(sub.status(), 200);
    publish(&server, "topic=user/42/x&data=before");
    let before = sub.next_event();
    assert_eq!(before.data, "before");
    let expired = sub.next_event();
    assert_eq!(expired.event_type, "ssehub-expired");
    assert_eq!(expired.data, r#"{"reason":"expired"}"#);
    assert_eq!(expired.last_event_id, before.last_event_id, "no id: the client resumes after its last event");
    assert!(sub.read_until_closed().is_empty());
    assert!(sub.ended_cleanly, "ended with the last chunk");
    assert_eq!(server.metric("ssehub_streams_expired_total"), 1);
}

#[test]
fn publishing_needs_the_publish_token_or_grants_covering_every_topic() {
    let server = hub(&[]);
    let watcher_token = mint(Algorithm::HS256, &grants(&["**"], &[]));
    let mut watcher = server.subscribe_with("topic=user/42/x&topic=user/43/x", &bearer(&watcher_token));
    let publisher = mint(Algorithm::HS256, &grants(&[], &["user/42/**"]));
    let post = |auth: Option<&str>, content_type: &str, body: &str| -> (u16, String) {
        let auth = auth.map(bearer).unwrap_or_default();
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = server.raw(request.as_bytes());
        (status_of(&response), response)
    };
    let form = "application/x-www-form-urlencoded";
    assert_eq!(post(Some(&publisher), form, "topic=user/42/x&data=granted").0, 200);
    assert_eq!(watcher.next_event().data, "granted");

    // One event of a batch outside the grant: 403 and nothing published.
    let batch = r#"[{"topic":"user/42/x","data":"a"},{"topic":["user/42/x","user/43/x"],"data":"b"}]"#;
    let (status, response) = post(Some(&publisher), "application/json", batch);
    assert_eq!(status, 403, "{response}");
    assert!(body_of(&response).contains("publish grants"));
    // Without credentials (even from loopback), with a bad token, with a subscribe-only token: refused.
    assert_eq!(post(None, form, "topic=user/42/x&data=no").0, 401);
    assert_eq!(post(Some("full-acces"), form, "topic=user/42/x&data=no").0, 401);
    assert_eq!(post(Some(&watcher_token), form, "topic=user/42/x&data=no").0, 403);
    // The publish token reaches anything.
    assert_eq!(post(Some("full-access"), form, "topic=user/43/x&data=marker").0, 200);
    assert_eq!(watcher.next_event().data, "marker", "nothing refused was published");
}

#[test]
fn streams_to_explicit_origins_allow_credentials() {
    let server = hub(&["--cors-origin", "https://app.example"]);
    let sub = server.subscribe_with("topic=news", "Origin: https://app.example\r\n");
    assert_eq!(header(&sub.head, "access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(header(&sub.head, "access-control-allow-credentials"), Some("true"));
    let any = hub(&["--cors-origin", "*"]);
    let sub = any.subscribe_with("topic=news", "Origin: https://app.example\r\n");
    assert_eq!(header(&sub.head, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&sub.head, "access-control-allow-credentials"), None, "never with *");
}

#[test]
fn disconnect_by_subject_ends_that_users_streams_on_every_worker() {
    let server = hub(&["--workers", "2"]);
    let token = |sub: &str| {
        mint(Algorithm::HS256, &json!({"sub": sub, "exp": now() + 60, "ssehub": {"subscribe": ["user/**"]}}))
    };
    let (alice, bob) = (token("alice"), token("bob"));
    // Several connections, so both workers hold some of alice's streams.
    let mut alices: Vec<_> = (0..6).map(|_| server.subscribe_with("topic=user/a", &bearer(&alice))).collect();
    let mut bobs = server.subscribe_with("topic=user/a", &bearer(&bob));
    let post = |auth: &str, body: &str| -> (u16, String) {
        let request = format!(
            "POST /disconnect HTTP/1.1\r\nHost: t\r\n{}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            bearer(auth),
            body.len()
        );
        let response = server.raw(request.as_bytes());
        (status_of(&response), body_of(&response).to_owned())
    };
    // Only credentials that cover everything may revoke.
    let narrow = mint(Algorithm::HS256, &grants(&[], &["user/**"]));
    assert_eq!(post(&narrow, "sub=alice").0, 403);
    assert_eq!(post(PUBLISH_TOKEN, "nobody=1").0, 400);

    assert_eq!(post(PUBLISH_TOKEN, "sub=alice"), (200, "6\n".to_owned()));
    for sub in &mut alices {
        let last = sub.next_event();
        assert_eq!((last.event_type.as_str(), last.data.as_str()), ("ssehub-expired", r#"{"reason":"revoked"}"#));
        assert!(sub.read_until_closed().is_empty());
        assert!(sub.ended_cleanly);
    }
    publish(&server, "topic=user/a&data=still-bob");
    assert_eq!(bobs.next_event().data, "still-bob", "other subjects keep their streams");
    assert_eq!(post(PUBLISH_TOKEN, "sub=alice"), (200, "0\n".to_owned()));
}

#[test]
fn no_token_or_secret_ever_reaches_the_log() {
    let log_path = common::temp_dir("auth-log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let args = [
        "--jwt-secret",
        SECRET,
        "--publish-token",
        PUBLISH_TOKEN,
        "--public-topic",
        "news",
        "--jwt-leeway",
        "0",
        "--log",
        "trace",
    ];
    let server = Server::start_with(&args, |command| {
        command.stderr(log);
    });
    let valid = mint(Algorithm::HS256, &grants(&["user/42/**"], &["user/42/**"]));
    let short = mint(Algorithm::HS256, &json!({"sub": "42", "exp": now() + 1, "ssehub": {"subscribe": ["user/**"]}}));
    let expired = mint(Algorithm::HS256, &json!({"sub": "42", "exp": now() - 100}));
    let forged = format!("{}x", &valid[..valid.len() - 1]);
    let wrong_key = encode(
        &Header::new(Algorithm::HS256),
        &grants(&["**"], &["**"]),
        &EncodingKey::from_secret(b"k").expect("key"),
    )
    .expect("mint");
    let tokens = [&valid, &short, &expired, &forged, &wrong_key];

    // Every source, every outcome: accepted, refused, expired while open.
    let mut accepted = server.subscribe_with("topic=user/42/a", &bearer(&valid));
    assert_eq!(accepted.status(), 200);
    let mut expiring = server.subscribe_with(&format!("topic=user/42/b&token={short}"), "");
    assert_eq!(expiring.status(), 200);
    let cookie = server.subscribe_with("topic=user/42/c", &format!("Cookie: a=b; ssehub_token={valid}\r\n"));
    assert_eq!(cookie.status(), 200);
    for token in &tokens[2..] {
        assert_eq!(server.subscribe_with("topic=user/42/a", &bearer(token)).status(), 401);
        assert_eq!(server.subscribe_with(&format!("topic=user/42/a&token={token}"), "").status(), 401);
    }
    assert_eq!(server.subscribe_with("topic=user/43", &bearer(&valid)).status(), 403);
    // A malformed request carrying a token in its target is refused whole.
    let bad = format!("GET /events?topic=&token={valid} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(status_of(&server.raw(bad.as_bytes())), 400);
    for (auth, status) in [(valid.as_str(), 200), (forged.as_str(), 401), ("wrong-publish-token", 401)] {
        let form = "topic=user/42/a&data=x";
        let request = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\n{}Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            bearer(auth),
            form.len()
        );
        assert_eq!(status_of(&server.raw(request.as_bytes())), status, "publish with {auth:.8}...");
    }
    assert_eq!(accepted.next_event().data, "x");
    assert_eq!(expiring.next_event().event_type, "ssehub-expired");

    drop(server);
    let text = std::fs::read_to_string(&log_path).expect("read log");
    let _ = std::fs::remove_file(&log_path);
    assert!(text.contains("subscriber token for sub"), "the trace log is on:\n{text}");
    for secret in tokens.iter().map(|t| t.as_str()).chain([SECRET, PUBLISH_TOKEN, "wrong-publish-token"]) {
        // Any piece of a token (its signature alone, its payload alone) counts.
        for piece in secret.split('.').filter(|p| p.len() >= 8) {
            assert!(!text.contains(piece), "the log holds a piece of a secret: {piece:.12}...");
        }
    }
}
