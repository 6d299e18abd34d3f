//! Transport settings both ends of a Trow gRPC connection share, so that blob streams are sized
//! the same on the sending and the receiving side.

/// Largest blob chunk in one message. Bounds the memory a stream holds per message.
pub const CHUNK_SIZE: usize = 1 << 20;

/// The chunk storage reads and sends a blob in (one HTTP/2 DATA frame of a blob body, or one
/// `ReadBlob` message). Smaller than [`CHUNK_SIZE`] because every layer of a download
/// (read-ahead, HTTP/2 buffers, the HTTP response) holds about one chunk, and a client that
/// stops reading keeps all of them in memory.
pub const READ_CHUNK_SIZE: usize = 256 << 10;

/// Largest manifest Trow stores, as distribution and the spec's guidance have it. Enforced by the
/// gateway on the HTTP body and again by storage on the gRPC side.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Largest gRPC message: a 4 MiB manifest plus framing, or one blob chunk.
pub const MAX_MESSAGE_SIZE: usize = 8 << 20;

/// HTTP/2 flow-control window per stream: how far a sender may run ahead of a slow receiver.
/// It is also what a stalled HTTP client costs the gateway in buffered bytes, so it stays at a
/// couple of read chunks: enough to keep a loopback or LAN link busy.
pub const STREAM_WINDOW: u32 = 2 * READ_CHUNK_SIZE as u32;

/// HTTP/2 flow-control window per connection, shared by all streams on it.
///
/// All gateway→storage calls share one connection, and a stream whose HTTP client stopped reading
/// keeps its stream window's worth of this window in use. With a window of a few stream windows,
/// a handful of stalled downloads would stop every other call; at 1 GiB it would take over a
/// thousand stalled streams (more than the gateway admits connections), while the memory actually
/// buffered stays bounded by [`STREAM_WINDOW`] per stream.
pub const CONNECTION_WINDOW: u32 = 1 << 30;

/// HTTP/2 frames big enough to carry a blob chunk in one frame.
pub const MAX_FRAME_SIZE: u32 = 1 << 20;
