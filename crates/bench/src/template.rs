//! URL and body templates: `--sub-url`, `--pub-url` and `--pub-body` are
//! parsed once into literal runs and placeholders (`{topic}`, `{broadcast}`,
//! `{data}`) so that rendering one request is a few `extend_from_slice` calls
//! into a reused buffer. Any other `{...}` is literal text (JSON bodies are
//! full of braces). Substituted values are inserted verbatim: the generator
//! only produces topic names and payloads made of letters, digits and `:`,
//! which need no URL, form or JSON escaping.

use std::net::{SocketAddr, ToSocketAddrs};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Lit(Vec<u8>),
    Topic,
    Broadcast,
    Data,
}

/// Values substituted for the placeholders.
#[derive(Clone, Copy, Debug, Default)]
pub struct Vars<'a> {
    pub topic: &'a str,
    pub broadcast: &'a str,
    pub data: &'a [u8],
}

#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
}

const PLACEHOLDERS: [(&str, Part); 3] =
    [("{topic}", Part::Topic), ("{broadcast}", Part::Broadcast), ("{data}", Part::Data)];

impl Template {
    pub fn parse(src: &str) -> Template {
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut rest = src;
        'outer: while !rest.is_empty() {
            for (name, part) in &PLACEHOLDERS {
                if let Some(after) = rest.strip_prefix(name) {
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(part.clone());
                    rest = after;
                    continue 'outer;
                }
            }
            let ch_len = rest.chars().next().map_or(1, char::len_utf8);
            lit.extend_from_slice(&rest.as_bytes()[..ch_len]);
            rest = &rest[ch_len..];
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Template { parts }
    }

    pub fn uses_topic(&self) -> bool {
        self.parts.contains(&Part::Topic)
    }

    pub fn uses_broadcast(&self) -> bool {
        self.parts.contains(&Part::Broadcast)
    }

    pub fn uses_data(&self) -> bool {
        self.parts.contains(&Part::Data)
    }

    /// Appends the rendered template to `out` (no allocation once `out` has
    /// grown to its working size).
    pub fn render_into(&self, out: &mut Vec<u8>, vars: &Vars<'_>) {
        for p in &self.parts {
            match p {
                Part::Lit(b) => out.extend_from_slice(b),
                Part::Topic => out.extend_from_slice(vars.topic.as_bytes()),
                Part::Broadcast => out.extend_from_slice(vars.broadcast.as_bytes()),
                Part::Data => out.extend_from_slice(vars.data),
            }
        }
    }
}

/// `http://host[:port]/path?query` with placeholders allowed in path and query.
#[derive(Clone, Debug)]
pub struct UrlTemplate {
    /// Resolved once at startup.
    pub addr: SocketAddr,
    /// `Host:` header value: the authority as written.
    pub host: String,
    pub path: Template,
}

impl UrlTemplate {
    pub fn parse(src: &str) -> Result<UrlTemplate, String> {
        let rest = src
            .strip_prefix("http://")
            .ok_or_else(|| format!("{src}: only http:// URLs are supported (the generator speaks plain HTTP/1.1)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('{') {
            return Err(format!("{src}: host must be literal (placeholders go in the path)"));
        }
        let has_port = match authority.rfind(']') {
            Some(close) => authority[close..].contains(':'),
            None => authority.contains(':'),
        };
        let with_port = if has_port { authority.to_string() } else { format!("{authority}:80") };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{src}: cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{src}: {with_port} resolves to nothing"))?;
        Ok(UrlTemplate { addr, host: authority.to_string(), path: Template::parse(path) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &Template, v: &Vars<'_>) -> String {
        let mut out = Vec::new();
        t.render_into(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn substitutes_placeholders_and_keeps_other_braces() {
        let t = Template::parse(
            r#"{"items":[{"channel":"{topic}","formats":{"http-stream":{"content":"data: {data}\n\n"}}}]}"#,
        );
        let v = Vars { topic: "t3", broadcast: "all", data: b"1:2:ab" };
        assert_eq!(
            render(&t, &v),
            r#"{"items":[{"channel":"t3","formats":{"http-stream":{"content":"data: 1:2:ab\n\n"}}}]}"#
        );
        assert!(t.uses_topic() && t.uses_data() && !t.uses_broadcast());
    }

    #[test]
    fn parses_urls() {
        let u = UrlTemplate::parse("http://127.0.0.1:8080/events?topic={topic}&topic={broadcast}").unwrap();
        assert_eq!(u.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(u.host, "127.0.0.1:8080");
        let v = Vars { topic: "t1", broadcast: "all", data: b"" };
        assert_eq!(render(&u.path, &v), "/events?topic=t1&topic=all");
        let u = UrlTemplate::parse("http://127.0.0.1").unwrap();
        assert_eq!(u.addr.port(), 80);
        assert_eq!(render(&u.path, &v), "/");
        let u = UrlTemplate::parse("http://[::1]:9000/x").unwrap();
        assert_eq!(u.addr.port(), 9000);
        assert!(UrlTemplate::parse("https://x/").is_err());
        assert!(UrlTemplate::parse("http://{topic}/").is_err());
    }
}
