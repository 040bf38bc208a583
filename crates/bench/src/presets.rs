//! Server presets: the subscribe/publish templates and default port of each
//! server we compare against, so a run is `--preset nchan` instead of four
//! flags. Explicit `--sub-url`/`--pub-url`/`--pub-body`/`--pub-header`
//! override a preset's value; `--port` replaces the preset's default port
//! (only in URLs that use it: pushpin publishes to its own control port).

pub struct Preset {
    pub name: &'static str,
    pub port: u16,
    /// Subscribe path for one topic.
    pub sub_path: &'static str,
    /// Subscribe path for one topic plus the broadcast topic on the same
    /// connection (the `topics` scenario), if the server supports it.
    pub sub_path_multi: Option<&'static str>,
    pub pub_method: &'static str,
    /// Publish path on the preset's port.
    pub pub_path: &'static str,
    /// Publish URL on a fixed address instead (pushpin's control port).
    pub pub_absolute: Option<&'static str>,
    pub pub_body: &'static str,
    pub pub_headers: &'static [&'static str],
    pub note: &'static str,
}

const FORM: &[&str] = &["Content-Type: application/x-www-form-urlencoded"];

/// ssehub's own API; also implemented by the axum and django peers.
const fn ssehub_like(name: &'static str, port: u16, note: &'static str) -> Preset {
    Preset {
        name,
        port,
        sub_path: "/events?topic={topic}",
        sub_path_multi: Some("/events?topic={topic}&topic={broadcast}"),
        pub_method: "POST",
        pub_path: "/publish",
        pub_absolute: None,
        pub_body: "topic={topic}&data={data}",
        pub_headers: FORM,
        note,
    }
}

pub const PRESETS: &[Preset] = &[
    ssehub_like("ssehub", 8080, "ssehub itself"),
    Preset {
        name: "nchan",
        port: 8081,
        sub_path: "/sub?channel={topic}",
        sub_path_multi: None,
        pub_method: "POST",
        pub_path: "/pub?channel={topic}",
        pub_absolute: None,
        pub_body: "{data}",
        pub_headers: &["Content-Type: text/plain"],
        note: "nginx + nchan (memory store; EventSource subscribers)",
    },
    ssehub_like("axum", 8082, "axum peer (chunked)"),
    ssehub_like("django-gunicorn", 8083, "Django under gunicorn"),
    ssehub_like("django-uvicorn", 8084, "Django under uvicorn"),
    Preset {
        name: "pushpin",
        port: 8085,
        sub_path: "/events?topic={topic}",
        sub_path_multi: None,
        pub_method: "POST",
        pub_path: "/publish/",
        pub_absolute: Some("http://127.0.0.1:18087/publish/"),
        pub_body: r#"{"items":[{"channel":"{topic}","formats":{"http-stream":{"content":"data: {data}\n\n"}}}]}"#,
        pub_headers: &["Content-Type: application/json"],
        note: "pushpin proxy; publishes to its control port (benches/peers/pushpin.sh: port + 10002)",
    },
    Preset {
        name: "floor",
        port: 8090,
        sub_path: "/events?topic={topic}",
        // The floor has no topics: it sends every event to every subscriber.
        sub_path_multi: Some("/events?topic={topic}&topic={broadcast}"),
        pub_method: "POST",
        pub_path: "/publish",
        pub_absolute: None,
        pub_body: "topic={topic}&data={data}",
        pub_headers: FORM,
        note: "`ssehub-bench floor`: the machine's fan-out floor (no topics)",
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.name).collect()
}

/// The URLs a preset resolves to for `host` and `port`.
pub struct PresetUrls {
    pub sub_url: String,
    pub sub_url_multi: Option<String>,
    pub pub_url: String,
}

impl Preset {
    pub fn urls(&self, host: &str, port: Option<u16>) -> PresetUrls {
        let base = format!("http://{host}:{}", port.unwrap_or(self.port));
        PresetUrls {
            sub_url: format!("{base}{}", self.sub_path),
            sub_url_multi: self.sub_path_multi.map(|p| format!("{base}{p}")),
            pub_url: match self.pub_absolute {
                Some(u) => u.to_string(),
                None => format!("{base}{}", self.pub_path),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_presets_resolve_and_parse() {
        for p in PRESETS {
            let u = p.urls("127.0.0.1", None);
            let sub = crate::template::UrlTemplate::parse(&u.sub_url).unwrap();
            assert_eq!(sub.addr.port(), p.port, "{}", p.name);
            assert!(sub.path.uses_topic(), "{}", p.name);
            crate::template::UrlTemplate::parse(&u.pub_url).unwrap();
            assert!(crate::template::Template::parse(p.pub_body).uses_data());
        }
    }

    #[test]
    fn port_override_spares_absolute_pub_url() {
        let p = find("pushpin").unwrap();
        let u = p.urls("127.0.0.1", Some(9999));
        assert_eq!(u.sub_url, "http://127.0.0.1:9999/events?topic={topic}");
        assert_eq!(u.pub_url, "http://127.0.0.1:18087/publish/");
        let u = find("nchan").unwrap().urls("127.0.0.1", None);
        assert_eq!(u.pub_url, "http://127.0.0.1:8081/pub?channel={topic}");
    }
}
