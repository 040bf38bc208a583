//! SSE fan-out the way a typical Rust developer writes it: tokio's multi-threaded
//! runtime, axum's `Sse` response and one `tokio::sync::broadcast` channel per topic
//! in a `Mutex<HashMap>`. Deliberately not optimised: this is a benchmark peer.
//!
//! * `GET /events?topic=T[&topic=U...]` — `text/event-stream`; every message
//!   published on any of the topics arrives as one `data:` event.
//! * `POST /publish` with a form body `topic=T&data=D` — 200 `ok`.
//!
//! Usage: `axum-sse-peer [ADDR]` (default `127.0.0.1:8082`).

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Form, Query, State},
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
    routing::{get, post},
    Router,
};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

const CHANNEL_CAPACITY: usize = 1024;

#[derive(Clone, Default)]
struct AppState {
    topics: Arc<Mutex<HashMap<String, broadcast::Sender<String>>>>,
}

impl AppState {
    fn subscribe(&self, topic: &str) -> broadcast::Receiver<String> {
        let mut topics = self.topics.lock().unwrap();
        topics
            .entry(topic.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, topic: &str, data: String) -> usize {
        let topics = self.topics.lock().unwrap();
        match topics.get(topic) {
            // `send` only fails when nobody is listening; that is not an error here.
            Some(tx) => tx.send(data).unwrap_or(0),
            None => 0,
        }
    }
}

async fn events(
    State(state): State<AppState>,
    // A list of pairs so that `topic` may be repeated.
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, (StatusCode, &'static str)> {
    let receivers: Vec<_> = params
        .iter()
        .filter(|(key, _)| key == "topic")
        .map(|(_, topic)| BroadcastStream::new(state.subscribe(topic)))
        .collect();
    if receivers.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "missing topic parameter\n"));
    }
    // Lagged receivers: skip what was missed and carry on.
    let stream = stream::select_all(receivers)
        .filter_map(|msg| async move { msg.ok() })
        .map(|data| Ok(Event::default().data(data)));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct Publish {
    topic: String,
    data: String,
}

async fn publish(State(state): State<AppState>, Form(msg): Form<Publish>) -> &'static str {
    state.publish(&msg.topic, msg.data);
    "ok\n"
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8082".to_owned());
    let app = Router::new()
        .route("/events", get(events))
        .route("/publish", post(publish))
        .with_state(AppState::default());

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    // No graceful shutdown: open SSE streams never end, so SIGTERM just exits.
    axum::serve(listener, app).await
}
