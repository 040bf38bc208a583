//! HTTP/1.1 as much as a fan-out hub and its clients need: the strict request
//! reader, chunked coding, and response heads.

pub mod chunked;
pub mod reader;
pub mod response;

pub use chunked::{ChunkError, ChunkedDecoder, Line};
pub use reader::{BodyKind, Duplicate, Head, Limits, Method, Progress, Request, RequestError, RequestReader};
