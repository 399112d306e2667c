//! Messages from the server, on their way to the client.
//!
//! Protocol rules relied on: authentication requests (`R`) come first and
//! end with AuthenticationOk or an ErrorResponse; BackendKeyData (`K`) comes
//! once, after AuthenticationOk and before the first ReadyForQuery; an
//! ErrorResponse with severity FATAL is the server's last message.

use super::{Session, SessionError};
use crate::net::Frame;
use crate::proto::{auth, error, keydata::CancelKey, tag};
use bytes::BytesMut;
use tracing::info;

impl Session<'_> {
    /// Handles one server frame, queueing bytes for the client.
    #[inline]
    pub(super) fn on_server_frame(
        &mut self,
        frame: &Frame,
        to_client: &mut BytesMut,
    ) -> Result<(), SessionError> {
        if frame.tag() == tag::READY_FOR_QUERY {
            self.on_ready(frame.body());
        }
        if self.protect.is_some() && self.on_server_protected(frame, to_client) {
            return Ok(());
        }
        match frame.tag() {
            tag::AUTHENTICATION => self.on_authentication(frame, to_client),
            tag::BACKEND_KEY_DATA => return self.on_key_data(frame, to_client),
            tag::ERROR_RESPONSE => {
                if error::is_fatal(frame.body()) {
                    self.server_said_fatal = true;
                }
                to_client.extend_from_slice(frame.as_bytes());
            }
            _ => to_client.extend_from_slice(frame.as_bytes()),
        }
        Ok(())
    }

    /// Seals the audit records of statements whose replies have just been
    /// handed to the client socket (see `SessionAudit::seal_finished`).
    #[inline]
    pub(super) fn seal_finished(&mut self) {
        if let Some(a) = self.audit.as_mut() {
            a.seal_finished();
        }
    }

    /// ReadyForQuery: a statement round trip ended. Idle (`I`) means no
    /// transaction is open, so a graceful shutdown may close the session.
    #[inline]
    fn on_ready(&mut self, body: &[u8]) {
        self.idle = body == b"I";
        if self.idle && !self.shared.config.proxy.idle_timeout.is_zero() {
            self.idle_since = Some(std::time::Instant::now());
        }
        self.tally.statement_done = true;
    }

    fn on_authentication(&mut self, frame: &Frame, to_client: &mut BytesMut) {
        match auth::request_code(frame.body()) {
            Some(auth::code::OK) if !self.authenticated => {
                self.authenticated = true;
                info!(user = %self.user, "authenticated");
                if self.protect.is_some() {
                    self.on_authenticated_protected();
                }
                self.audit_opened();
            }
            Some(auth::code::SASL) => {
                // Only an upstream on TLS refuses the `y` flag.
                self.expect_sasl_initial = self.shared.upstream_tls.is_some();
                if auth::write_without_channel_binding(frame.body(), to_client) {
                    return;
                }
            }
            _ => {}
        }
        to_client.extend_from_slice(frame.as_bytes());
    }

    /// Replaces the server's cancel key with one pgveil minted, so a cancel
    /// comes back through pgveil and the client never learns the backend pid.
    fn on_key_data(&mut self, frame: &Frame, to_client: &mut BytesMut) -> Result<(), SessionError> {
        let Some(upstream) = CancelKey::from_key_data(frame.body()) else {
            return Err(SessionError::ServerFrame(
                crate::net::FrameError::TooShort {
                    tag: 'K',
                    len: frame.body().len() as u32 + 4,
                },
            ));
        };
        if let Some(p) = self.protect.as_mut() {
            p.note_backend_key(&upstream); // the bulk-read guard cancels with it
        }
        let (mine, registration) = self
            .shared
            .cancels
            .register(upstream, &self.user)
            .map_err(|_| SessionError::Random)?;
        mine.write_key_data(to_client);
        self.cancel = Some(registration);
        Ok(())
    }
}
