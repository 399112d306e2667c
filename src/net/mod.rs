//! Bytes to frames and back: the layer that touches sockets.
//!
//! Nothing here knows what a message means; [`frame`] only cuts the stream
//! at message boundaries and enforces the size cap, [`stream`] is a socket
//! that is plain TCP or TLS, and [`tweaks`] keeps the socket options in one
//! place.

pub mod frame;
pub mod stream;
pub mod tweaks;

pub use frame::{next_frame, next_startup, read_hint, Frame, FrameError, StartupPacket};
pub use stream::{ClientStream, MaybeTls, ServerStream};
