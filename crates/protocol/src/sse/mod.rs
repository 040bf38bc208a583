//! The `text/event-stream` wire format: the field encoder every event goes
//! through ([`encode`]), the shared frame it is encoded into once, with its id
//! and its HTTP chunk framing ([`frame`]), and the WHATWG parser clients,
//! tests and fuzz targets read streams with ([`parse`]).

pub mod encode;
pub mod frame;
pub mod parse;

pub use encode::{FieldError, encode_fields, normalize_newlines, retry_line, valid_event_type};
pub use frame::{Frame, Framing, StaticFrame, chunk_const, chunked_len, encode_chunk};
pub use parse::{EventStreamParser, ParsedEvent, SseError, SseParser};

/// A comment line: keeps proxies from timing the stream out, ignored by clients.
pub const HEARTBEAT: StaticFrame = crate::static_frame!(b":\n");
