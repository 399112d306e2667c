//! Bytes to frames and back: the layer that touches sockets.
//!
//! Nothing here knows what a message means; [`frame`] only cuts the stream
//! at message boundaries and enforces the size cap, and [`tweaks`] keeps the
//! socket options in one place.

pub mod frame;
pub mod tweaks;

pub use frame::{next_frame, next_startup, read_hint, Frame, FrameError, StartupPacket};
