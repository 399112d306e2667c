//! Messages from the client, on their way to the server.
//!
//! Protocol rules relied on: after startup the client sends only tagged
//! frames; `X` (Terminate) is its last message. Everything else is relayed
//! as the original bytes; later layers (SQL analysis, encryption) hook in
//! here, one match arm per message type they need to see.

use super::Session;
use crate::net::Frame;
use crate::proto::tag;
use bytes::BytesMut;

/// What the relay should do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// Keep relaying.
    Continue,
    /// Flush what is queued, then close both sides.
    Close,
}

impl Session<'_> {
    /// Handles one client frame, queueing bytes for the server.
    #[inline]
    pub(super) fn on_client_frame(&mut self, frame: &Frame, to_server: &mut BytesMut) -> Flow {
        if self.protect.is_some() {
            return self.on_client_protected(frame, to_server);
        }
        if matches!(frame.tag(), b'Q' | b'P') {
            self.tally.relayed += 1;
        }
        to_server.extend_from_slice(frame.as_bytes());
        if frame.tag() == tag::TERMINATE {
            Flow::Close
        } else {
            Flow::Continue
        }
    }
}
