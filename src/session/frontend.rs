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
    /// pgveil refuses the connection: FATAL with this SQLSTATE and message
    /// to the client, Terminate to the server.
    Refuse(&'static str, &'static str),
}

impl Session<'_> {
    /// Handles one client frame, queueing bytes for the server.
    #[inline]
    pub(super) fn on_client_frame(&mut self, frame: &Frame, to_server: &mut BytesMut) -> Flow {
        if self.expect_sasl_initial {
            return self.on_sasl_initial(frame, to_server);
        }
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

    /// The client's first SASL message, when pgveil reaches the server over
    /// TLS: a client that supports channel binding (its own connection is
    /// TLS) but was offered none says so, and PostgreSQL would refuse it
    /// as a downgrade with a message that does not mention the proxy.
    #[cold]
    fn on_sasl_initial(&mut self, frame: &Frame, to_server: &mut BytesMut) -> Flow {
        self.expect_sasl_initial = false;
        if frame.tag() == b'p' && crate::proto::auth::sasl_initial_claims_binding(frame.body()) {
            return Flow::Refuse(
                crate::proto::error::sqlstate::PROTOCOL_VIOLATION,
                "pgveil: SCRAM channel binding cannot pass through pgveil, and PostgreSQL (reached \
                 over TLS) refuses clients that support it but were not offered it; connect with \
                 channel_binding=disable (libpq) or ChannelBinding::Disable (tokio-postgres)",
            );
        }
        to_server.extend_from_slice(frame.as_bytes());
        Flow::Continue
    }
}
