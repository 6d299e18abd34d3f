//! Transport settings both ends of a Trow gRPC connection share, so that blob streams are sized
//! the same on the sending and the receiving side.

/// Largest blob chunk in one message. Bounds the memory a stream holds per message.
pub const CHUNK_SIZE: usize = 1 << 20;

/// Largest gRPC message: a 4 MiB manifest plus framing, or one blob chunk.
pub const MAX_MESSAGE_SIZE: usize = 8 << 20;

/// HTTP/2 flow-control window per stream: how far a sender may run ahead of a slow receiver.
/// Large enough to keep loopback and LAN links busy, small enough to bound memory per blob.
pub const STREAM_WINDOW: u32 = 2 << 20;

/// HTTP/2 flow-control window per connection, shared by all streams on it.
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// HTTP/2 frames big enough to carry a blob chunk in one frame.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
