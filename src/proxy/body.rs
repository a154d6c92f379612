//! The body type every stage of the request path passes along, and a body of one text.
//! A leaf: it imports nothing of patgate.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

/// Errors crossing the request path, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every answer.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body of one text.
pub fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync()
}
