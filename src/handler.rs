//! What each request does: route and authorize on its head, then answer it
//! once complete. Subscribing turns the connection into an event stream.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use crate::auth::authorize_publish;
use crate::cluster::{Reply, Request};
use crate::conn::{Awaiting, Backlog, Chunk, State, Stream, Subscriptions, write_frames};
use crate::event::{Event, EventId};
use crate::http::reader::BodyKind;
use crate::http::{self, HttpError, Method, Progress, Route};
use crate::metrics::{self, Globals};
use crate::publish::{self, PublishError};
use crate::query;
use crate::reactor::{OUT_HIGH_WATER, Worker};
use crate::sse::{self, Gap};

const EVENT_STREAM_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                                 X-Accel-Buffering: no\r\nConnection: close\r\n";

impl Worker {
    /// Parses and answers every complete request buffered on an HTTP connection.
    pub(crate) fn process(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else { return };
            let State::Http(http) = &mut conn.state else { return };
            if http.close_after || http.awaiting.is_some() || http.out.len() >= OUT_HIGH_WATER {
                break;
            }
            match http.reader.advance() {
                Ok(Progress::Pending) => break,
                Ok(Progress::Head) => {
                    if let Err(error) = self.admit(key) {
                        return self.fail(key, error);
                    }
                }
                Ok(Progress::Complete) => {
                    self.respond(key);
                    let Some(conn) = self.conns.get_mut(key) else { return };
                    let State::Http(http) = &mut conn.state else { return };
                    if http.close_after {
                        continue; // an error answer: stop here
                    }
                    let keep_alive = http.reader.request().is_some_and(|r| r.head.keep_alive);
                    http.reader.finish();
                    if !keep_alive || self.shutdown_at.is_some() {
                        http.close_after = true;
                    } else {
                        self.extend_request_deadline(key);
                    }
                }
                Err(error) => return self.fail(key, error),
            }
        }
        self.flush_http(key);
    }

    /// Decides on a head before its body is read: path, method, authorization.
    fn admit(&mut self, key: usize) -> Result<(), HttpError> {
        let config = &self.shared.config;
        let conn = &mut self.conns[key];
        let State::Http(http) = &mut conn.state else { return Ok(()) };
        let Some(request) = http.reader.request() else { return Ok(()) };
        let head = request.head;
        let allowed = match head.route {
            Route::Events => matches!(head.method, Method::Get | Method::Options),
            Route::Publish => matches!(head.method, Method::Post | Method::Options),
            Route::Healthz | Route::Readyz | Route::Metrics => head.method == Method::Get,
            Route::Unknown => return Err(HttpError::NotFound),
        };
        if !allowed {
            return Err(HttpError::MethodNotAllowed(match head.route {
                Route::Events => "GET, OPTIONS",
                Route::Publish => "POST, OPTIONS",
                _ => "GET",
            }));
        }
        if head.route == Route::Publish && head.method == Method::Post {
            authorize_publish(config.publish_token.as_deref(), request.authorization(), conn.loopback)?;
            if conn.over_limit {
                return Err(HttpError::Unavailable("too many connections"));
            }
            if head.expect_continue && head.http11 && head.body != BodyKind::None {
                http.out.extend_from_slice(http::CONTINUE);
            }
        }
        Ok(())
    }

    /// Answers a complete request.
    fn respond(&mut self, key: usize) {
        let Some(request) = self.request(key) else { return };
        let head = request.head;
        match (head.route, head.method) {
            (Route::Events, Method::Get) => self.subscribe(key),
            (Route::Publish, Method::Post) => self.publish(key),
            (_, Method::Options) => self.preflight(key),
            (Route::Healthz, _) => {
                let body: &[u8] = if self.backplane_down() { b"degraded: redis unreachable\n" } else { b"ok\n" };
                self.reply(key, 200, "text/plain; charset=utf-8", body);
            }
            (Route::Readyz, _) if self.backplane_down() => {
                self.reply(key, 503, "text/plain; charset=utf-8", b"not ready: redis unreachable\n");
            }
            (Route::Readyz, _) => self.reply(key, 200, "text/plain; charset=utf-8", b"ready\n"),
            (Route::Metrics, _) => {
                let globals = Globals {
                    events_published: self.shared.bus.published(),
                    max_connections: self.shared.max_connections,
                    backplane: self.shared.cluster.as_ref().map(|c| &*c.backplane),
                };
                let text = metrics::render(&self.shared.stats, &globals);
                self.reply(key, 200, "text/plain; version=0.0.4; charset=utf-8", text.as_bytes());
            }
            _ => self.fail(key, HttpError::NotFound),
        }
    }

    fn request(&self, key: usize) -> Option<http::reader::Request<'_>> {
        match &self.conns.get(key)?.state {
            State::Http(http) => http.reader.request(),
            _ => None,
        }
    }

    /// The CORS origin to answer the current request with, if any.
    fn cors(&self, key: usize) -> Option<String> {
        let origin = self.request(key).and_then(|r| r.origin());
        self.shared.config.cors_for(origin).map(str::to_owned)
    }

    /// Queues a complete response on an HTTP connection.
    fn reply(&mut self, key: usize, status: u16, content_type: &str, body: &[u8]) {
        let cors = self.cors(key);
        let keep_alive = self.request(key).is_some_and(|r| r.head.keep_alive);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Http(http) = &mut conn.state else { return };
        http::write_head(&mut http.out, status, content_type, body.len(), keep_alive, cors.as_deref());
        http.out.extend_from_slice(body);
    }

    /// Answers with an error and closes: the bytes that follow are never read as requests.
    pub(crate) fn fail(&mut self, key: usize, error: HttpError) {
        let cors = self.cors(key);
        self.fail_with_cors(key, error, cors);
    }

    fn fail_with_cors(&mut self, key: usize, error: HttpError, cors: Option<String>) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let peer = conn.sock.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
        log::debug!("{peer}: {error}");
        self.shared.stats[self.index].reject(error.status());
        if let State::Http(http) = &mut conn.state {
            http.out.extend_from_slice(&error.response(cors.as_deref()));
            http.close_after = true;
            http.failed = true;
        }
        self.flush_http(key);
    }

    fn preflight(&mut self, key: usize) {
        let cors = self.cors(key);
        let keep_alive = self.request(key).is_some_and(|r| r.head.keep_alive);
        let Some(conn) = self.conns.get_mut(key) else { return };
        let State::Http(http) = &mut conn.state else { return };
        http.out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
        http::write_cors(&mut http.out, cors.as_deref());
        http.out.extend_from_slice(
            b"Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n\
              Access-Control-Allow-Headers: Authorization, Content-Type, Last-Event-ID\r\n\
              Access-Control-Max-Age: 86400\r\n",
        );
        if !keep_alive {
            http.out.extend_from_slice(b"Connection: close\r\n");
        }
        http.out.extend_from_slice(b"\r\n");
    }

    fn publish(&mut self, key: usize) {
        let Some(request) = self.request(key) else { return };
        let decoded = publish::decode(request.content_type(), request.body());
        let publications = match decoded {
            Ok(publications) => publications,
            Err(PublishError::MediaType) => return self.fail(key, HttpError::UnsupportedMediaType),
            Err(PublishError::Invalid(why)) => return self.fail(key, HttpError::BadRequest(why)),
        };
        if let Some(cluster) = &self.shared.cluster {
            // The stream assigns the ids; answer once Redis has them.
            if !cluster.backplane.is_up() {
                return self.fail(key, HttpError::Unavailable("the cluster backplane (Redis) is unreachable"));
            }
            let awaiting = Awaiting { keep_alive: request.head.keep_alive, cors: self.cors(key) };
            let stamp = self.conns[key].stamp;
            let sent =
                cluster.requests.send(Request::Publish { worker: self.index, key: key as u32, stamp, publications });
            if sent.is_err() {
                return self.fail(key, HttpError::Unavailable("the cluster backplane is stopping"));
            }
            if let State::Http(http) = &mut self.conns[key].state {
                http.awaiting = Some(awaiting);
            }
            return;
        }
        let events: Vec<Event> = publications.iter().map(publish::Publication::encode).collect();
        match self.shared.bus.publish(events) {
            Ok(ids) => self.reply(key, 200, "text/plain; charset=utf-8", id_lines(&ids).as_bytes()),
            Err(crate::bus::Full) => self.fail(key, HttpError::Unavailable("event queues are full; retry")),
        }
    }

    /// Turns the connection into an event stream: subscribe, replay, then live events.
    fn subscribe(&mut self, key: usize) {
        let Some(request) = self.request(key) else { return };
        let subscribe = match query::parse_subscribe(request.query().unwrap_or_default()) {
            Ok(subscribe) => subscribe,
            Err(error) => return self.fail(key, HttpError::BadRequest(error.detail())),
        };
        // The header wins: a browser sends it on reconnect with the latest id,
        // while a `lastEventId` in the URL still holds the first one.
        let resume = match request.last_event_id().filter(|id| !id.is_empty()) {
            Some(id) => Some(id.to_vec()),
            None => subscribe.last_event_id,
        };
        let mut head = EVENT_STREAM_HEAD.as_bytes().to_vec();
        http::write_cors(&mut head, self.cors(key).as_deref());
        head.extend_from_slice(b"\r\n");

        if self.conns[key].over_limit {
            // EventSource gives up on a non-200 answer but retries after a closed stream.
            let retry = self.jittered_retry();
            head.extend_from_slice(&sse::retry_frame(retry));
            if let State::Http(http) = &mut self.conns[key].state {
                http.out.extend_from_slice(&head);
                http.close_after = true;
            }
            return;
        }
        head.extend_from_slice(&sse::retry_frame(self.shared.config.retry));

        // Drain the inbox first: then the history holds every event a client
        // could have seen, and live delivery starts right after it.
        self.drain_inbox();
        let plan = self.plan_replay(&subscribe.topics, resume.as_deref());
        let mut subs = Vec::with_capacity(subscribe.topics.len());
        for name in &subscribe.topics {
            let topic = self.topics.get_or_insert(name);
            subs.push((topic, self.topics.subscribe(topic, key as u32)));
        }
        let subs = match subs[..] {
            [(topic, pos)] => Subscriptions::One(topic, pos),
            _ => Subscriptions::Many(subs.into_boxed_slice()),
        };
        let stamp = self.new_stamp();
        let stats = &self.shared.stats[self.index];
        stats.http.fetch_sub(1, Relaxed);
        stats.subscribers.fetch_add(1, Relaxed);
        if resume.is_some() {
            stats.replays.fetch_add(1, Relaxed);
        }
        if matches!(plan, Replay::Memory(Some(_), _)) {
            stats.gaps.fetch_add(1, Relaxed);
        }
        let max_backlog = self.shared.config.max_backlog as usize;
        // Live delivery starts after the newest event in history, or after
        // the client's own id if this worker has not reached it yet.
        let resumed_at = resume.as_deref().and_then(EventId::parse).unwrap_or(EventId::ZERO);
        let live_after = self.fanout.last_drained().max(resumed_at);
        let filtered = self.fanout.busy() || live_after > self.fanout.last_drained();
        if filtered {
            self.fanout.filter(key as u32, live_after);
        }
        let conn = &mut self.conns[key];
        conn.stamp = stamp; // retires the request deadline
        let mut stream = Stream { batch: 0, filtered, subs, backlog: None };
        match plan {
            Replay::Memory(None, replay) if replay.is_empty() => {
                // The common case: no backlog at all, just the head.
                match write_frames(&mut conn.sock, std::iter::once(&head[..])) {
                    Ok(n) if n == head.len() => {}
                    Ok(n) => {
                        let mut backlog = Backlog::new(max_backlog);
                        backlog.push(Chunk::Owned(head[n..].into()));
                        stream.backlog = Some(Box::new(backlog));
                    }
                    Err(_) => {
                        conn.state = State::Stream(stream);
                        return self.close(key);
                    }
                }
                conn.state = State::Stream(stream);
            }
            Replay::Memory(gap, replay) => {
                let mut backlog = Backlog::new(max_backlog + replay.len() + 2);
                backlog.push(Chunk::Owned(head.into_boxed_slice()));
                backlog.extend(
                    gap.map(|gap| Chunk::Static(gap.frame())).into_iter().chain(replay.into_iter().map(Chunk::Event)),
                );
                stream.backlog = Some(Box::new(backlog));
                conn.state = State::Stream(stream);
                self.flush_stream(key);
            }
            Replay::Stream(after) => {
                // Older than this node's memory: the command thread reads the
                // stream; live events queue behind the place the replay goes.
                let mut backlog = Backlog::new(max_backlog + 2);
                backlog.push(Chunk::Owned(head.into_boxed_slice()));
                backlog.hold();
                stream.backlog = Some(Box::new(backlog));
                conn.state = State::Stream(stream);
                let floor = self.shared.cluster.as_ref().map_or(EventId::ZERO, |c| c.backplane.floor());
                let request = Request::Replay {
                    worker: self.index,
                    key: key as u32,
                    stamp,
                    topics: subscribe.topics,
                    after,
                    upto: self.fanout.last_drained().max(floor),
                    history: self.shared.config.history,
                };
                if let Some(cluster) = &self.shared.cluster {
                    if cluster.requests.send(request).is_err() {
                        self.release_replay(key, stamp, Some(Gap::Unavailable), Vec::new());
                    }
                }
                self.flush_stream(key);
            }
        }
        self.arm_heartbeat(key, stamp);
    }

    /// What a resuming client gets before live events.
    ///
    /// From memory: maybe a gap notice, then every retained event of its
    /// topics newer than its id, in order. In cluster mode an id older than
    /// what this node has followed is served from the stream instead, so a
    /// client resumes on any node without a false gap.
    fn plan_replay(&self, topics: &[String], resume: Option<&[u8]>) -> Replay {
        let Some(raw) = resume else { return Replay::Memory(None, Vec::new()) };
        let after = EventId::parse(raw);
        let known: Vec<_> = topics.iter().filter_map(|name| self.topics.find(name)).collect();
        let missed = |id: EventId| known.iter().any(|&t| self.topics.get(t).history.missed(id));
        let gap = match (after, &self.shared.cluster) {
            (None, _) => Some(Gap::Unparseable),
            (Some(id), Some(cluster)) if id < cluster.backplane.floor() || missed(id) => {
                return Replay::Stream(Some(id));
            }
            (Some(id), None) if id < self.shared.bus.boot_id() => Some(Gap::BeforeStart),
            (Some(id), _) => missed(id).then_some(Gap::Evicted),
        };
        let mut events: Vec<Arc<Event>> =
            known.iter().flat_map(|&t| self.topics.get(t).history.since(after).cloned()).collect();
        if known.len() > 1 {
            events.sort_by_key(|e| e.id());
            events.dedup_by_key(|e| e.id());
        }
        Replay::Memory(gap, events)
    }

    /// Answers from the cluster's command thread.
    pub(crate) fn handle_replies(&mut self) {
        while let Some(reply) = self.shared.bus.inbox(self.index).pop_reply() {
            match reply {
                Reply::Published { key, stamp, ids } => self.answer_publish(key as usize, stamp, ids),
                Reply::Replayed { key, stamp, gap, events } => self.release_replay(key as usize, stamp, gap, events),
            }
        }
    }

    fn answer_publish(&mut self, key: usize, stamp: u32, ids: Option<Vec<EventId>>) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.stamp == stamp) else { return };
        let State::Http(http) = &mut conn.state else { return };
        let Some(awaiting) = http.awaiting.take() else { return };
        match ids {
            Some(ids) => {
                let body = id_lines(&ids);
                let keep_alive = awaiting.keep_alive && !http.close_after;
                http::write_head(
                    &mut http.out,
                    200,
                    "text/plain; charset=utf-8",
                    body.len(),
                    keep_alive,
                    awaiting.cors.as_deref(),
                );
                http.out.extend_from_slice(body.as_bytes());
                self.process(key); // answers what was pipelined behind it, then writes
            }
            None => {
                self.fail_with_cors(key, HttpError::Unavailable("the cluster backplane (Redis) failed"), awaiting.cors)
            }
        }
    }

    /// Puts a replay read from the stream in front of the live events queued meanwhile.
    fn release_replay(&mut self, key: usize, stamp: u32, gap: Option<Gap>, events: Vec<Arc<Event>>) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.stamp == stamp) else { return };
        let State::Stream(stream) = &mut conn.state else { return };
        let Some(backlog) = stream.backlog.as_mut().filter(|b| b.is_held()) else { return };
        if gap.is_some() {
            self.shared.stats[self.index].gaps.fetch_add(1, Relaxed);
        }
        backlog
            .release(gap.map(|gap| Chunk::Static(gap.frame())).into_iter().chain(events.into_iter().map(Chunk::Event)));
        self.flush_stream(key);
    }

    fn backplane_down(&self) -> bool {
        self.shared.cluster.as_ref().is_some_and(|c| !c.backplane.is_up())
    }
}

/// How a subscriber catches up before live events.
enum Replay {
    /// From this worker's history: an optional gap notice, then the events.
    Memory(Option<Gap>, Vec<Arc<Event>>),
    /// Cluster mode: from the Redis stream, after this id.
    Stream(Option<EventId>),
}

/// The publish answer: one id per line.
fn id_lines(ids: &[EventId]) -> String {
    let mut body = String::with_capacity(ids.len() * 24);
    for id in ids {
        body.push_str(&id.to_string());
        body.push('\n');
    }
    body
}
