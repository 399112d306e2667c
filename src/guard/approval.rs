//! Approval tokens: the "vault" rule's second person, in a string.
//!
//! `pgveil approve` (run by an approver, with the master key) signs an
//! [`Approval`] with the keyring's Ed25519 key; the requester hands the
//! token to pgveil with `SET pgveil.approval = '<token>'`. pgveil checks
//! the signature with the keyring's public key, that the token is the
//! requester's, not expired and (single-use tokens) not used before.
//!
//! Format: `pgveil-approval-1.` + base64url(payload) + `.` +
//! base64url(signature). The payload is TOML; the signature covers a
//! domain-separation prefix and the payload bytes exactly as embedded, so
//! no canonical form is needed and the same key can sign other things
//! (audit checkpoints) without a signature of one being valid as another.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every token starts with this, so a stray string is told apart from a
/// token that was altered.
pub const TOKEN_PREFIX: &str = "pgveil-approval-1.";
/// Signed before the payload: what the signature is for.
const SIGNING_CONTEXT: &[u8] = b"pgveil approval token v1\0";
/// How long a single-use token (`--ttl 0`) may wait to be used.
pub const SINGLE_USE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One approval, as signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Random identifier (32 hex digits), for the audit trail and replay
    /// protection; safe to log, unlike the token.
    pub id: String,
    /// The user who may use it (its PostgreSQL login name).
    pub requester: String,
    /// Who approved it (a name listed in `[approvals] approvers`).
    pub approver: String,
    /// Tables (`schema.table`) whose caps it lifts.
    pub tables: Vec<String>,
    /// Rows per statement it allows.
    pub max_rows: u64,
    /// Milliseconds since the Unix epoch when it was issued.
    pub issued_unix_ms: u64,
    /// Milliseconds since the Unix epoch after which it is refused.
    pub expires_unix_ms: u64,
    /// Consumed by the first statement it lifts a cap for.
    pub single_use: bool,
    /// Why it was granted, as the approver wrote it.
    pub reason: String,
}

/// Why a token is refused; each says which check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// Not a token at all (cut, mistyped, not base64).
    #[error(
        "pgveil: the value of pgveil.approval is not a pgveil approval token (it may be cut short or \
         mistyped); paste the whole last line printed by pgveil approve"
    )]
    Malformed,
    /// The signature does not match the payload under pgveil's key.
    #[error(
        "pgveil: the approval token's signature does not verify: it was altered or forged, or signed \
         with another keyring; ask the approver for a new one"
    )]
    Forged,
    /// Past its expiry.
    #[error("pgveil: approval {id} expired at {at}; ask the approver for a new one")]
    Expired {
        /// The approval's id.
        id: String,
        /// When it expired, RFC 3339 UTC.
        at: String,
    },
    /// A single-use token already used (on any connection).
    #[error(
        "pgveil: approval {id} was for a single use and has already been used; ask the approver for a \
         new one"
    )]
    Replayed {
        /// The approval's id.
        id: String,
    },
    /// Issued to someone else.
    #[error(
        "pgveil: approval {id} was issued to user {requester}, not to {user}; an approval can only be \
         used by the user it names"
    )]
    WrongUser {
        /// The approval's id.
        id: String,
        /// Whom it names.
        requester: String,
        /// Who tried to use it.
        user: String,
    },
    /// Does not name a table the statement reads.
    #[error(
        "pgveil: approval {id} covers {tables}, not {table}; ask the approver for an approval naming \
         {table}"
    )]
    WrongTable {
        /// The approval's id.
        id: String,
        /// The tables it names, comma-separated.
        tables: String,
        /// The table the statement reads.
        table: String,
    },
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the epoch as RFC 3339 UTC, for messages.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl Approval {
    /// Signs the approval with `key`, returning the token.
    pub fn sign(&self, key: &Ed25519KeyPair) -> Result<String, toml::ser::Error> {
        let payload = toml::to_string(self)?;
        let mut signed = SIGNING_CONTEXT.to_vec();
        signed.extend_from_slice(payload.as_bytes());
        let sig = key.sign(&signed);
        Ok(format!(
            "{TOKEN_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(sig.as_ref())
        ))
    }

    /// Checks a token's form and signature under `public_key`; says nothing
    /// yet about who uses it or when (see [`Approval::check_use`]).
    pub fn verify(token: &str, public_key: &[u8]) -> Result<Approval, ApprovalError> {
        let rest = token
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(ApprovalError::Malformed)?;
        let (payload, sig) = rest.split_once('.').ok_or(ApprovalError::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| ApprovalError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| ApprovalError::Malformed)?;
        let mut signed = SIGNING_CONTEXT.to_vec();
        signed.extend_from_slice(&payload);
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&signed, &sig)
            .map_err(|_| ApprovalError::Forged)?;
        let text = std::str::from_utf8(&payload).map_err(|_| ApprovalError::Malformed)?;
        toml::from_str(text).map_err(|_| ApprovalError::Malformed)
    }

    /// Whether `user` may use the approval at `now_ms` (not who else used
    /// a single-use one: that is the shared set's business).
    pub fn check_use(&self, user: &str, now_ms: u64) -> Result<(), ApprovalError> {
        if self.requester != user {
            return Err(ApprovalError::WrongUser {
                id: self.id.clone(),
                requester: self.requester.clone(),
                user: user.to_owned(),
            });
        }
        if now_ms >= self.expires_unix_ms {
            return Err(ApprovalError::Expired {
                id: self.id.clone(),
                at: rfc3339(self.expires_unix_ms),
            });
        }
        Ok(())
    }

    /// Whether the approval names `table` (`schema.table`).
    pub fn covers(&self, table: &str) -> bool {
        self.tables.iter().any(|t| t == table)
    }

    /// The refusal for a statement reading `table`, which it does not name.
    pub fn wrong_table(&self, table: &str) -> ApprovalError {
        ApprovalError::WrongTable {
            id: self.id.clone(),
            tables: self.tables.join(", "),
            table: table.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn approval() -> Approval {
        Approval {
            id: "00112233445566778899aabbccddeeff".into(),
            requester: "alice".into(),
            approver: "bob".into(),
            tables: vec!["public.guests".into()],
            max_rows: 50_000,
            issued_unix_ms: 1_000,
            expires_unix_ms: 2_000,
            single_use: false,
            reason: "annual audit export".into(),
        }
    }

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap()
    }

    #[test]
    fn round_trip_and_every_refusal() {
        let k = key();
        let pk = k.public_key().as_ref().to_vec();
        let token = approval().sign(&k).unwrap();
        assert!(!token.contains('\n'));
        let a = Approval::verify(&token, &pk).unwrap();
        assert_eq!(a, approval());
        assert_eq!(a.check_use("alice", 1_500), Ok(()));
        assert!(matches!(
            a.check_use("carol", 1_500),
            Err(ApprovalError::WrongUser { .. })
        ));
        assert!(matches!(
            a.check_use("alice", 2_000),
            Err(ApprovalError::Expired { .. })
        ));
        assert!(a.covers("public.guests") && !a.covers("public.stays"));
        // Any changed byte in the payload or signature: forged.
        let body = TOKEN_PREFIX.len();
        for at in [body + 3, token.len() - 5] {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).unwrap();
            assert_eq!(
                Approval::verify(&forged, &pk),
                Err(ApprovalError::Forged),
                "byte {at}"
            );
        }
        assert_eq!(
            Approval::verify("hello", &pk),
            Err(ApprovalError::Malformed)
        );
        let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).unwrap();
        assert_eq!(
            Approval::verify(&token, other.public_key().as_ref()),
            Err(ApprovalError::Forged)
        );
    }
}
