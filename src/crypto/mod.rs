//! The cryptographic core: keyring, envelope format and field encryption.
//!
//! pgveil encrypts the values of protected columns before they reach
//! PostgreSQL and decrypts them on the way back; the database only ever
//! holds envelopes (`bytea`) and never a key. This module has no network
//! dependency. The flow, from the operator's secret to one value:
//!
//! * [`MasterKey`] — 32 bytes from a 0600 key file or `PGVEIL_MASTER_KEY`;
//!   it only wraps the keyring's keys.
//! * [`Keyring`] — numbered root-key versions (active / decrypt-only /
//!   destroyed) and an Ed25519 signing key, in `keyring/keyring.toml`
//!   ([`store`] writes it atomically); managed by the [`cli`] commands.
//! * [`ColumnCipher`] — per-column keys derived by HKDF from each live root
//!   key, built once (AES-256-GCM for randomized mode, AES-256-GCM-SIV with
//!   its message keys precomputed for searchable mode, `siv`);
//!   [`ColumnCipher::encrypt`] / [`ColumnCipher::decrypt`] are the hot
//!   path and append into a caller-provided buffer.
//! * [`envelope`] — the stored byte layout (`docs/FORMAT.md`).
//! * `value` — validation and canonicalization of the logical types, and
//!   rendering in PostgreSQL text or binary wire format.
//!
//! Every failure is a [`CryptoError`] with a SQLSTATE and a message that
//! never contains a protected value.

mod buf;
pub mod cli;
mod column;
mod config;
pub mod envelope;
mod error;
mod keyring;
mod master;
mod nonce;
mod secret;
mod siv;
pub mod store;
mod types;
mod value;
pub(crate) use value::civil_from_days;
mod wrap;

pub use buf::OutBuf;
pub use column::ColumnCipher;
pub use config::KeyringConfig;
pub use error::{CryptoError, Result};
pub use keyring::{Keyring, VersionInfo};
pub use master::{MasterKey, MASTER_KEY_ENV};
pub use nonce::discard_buffered as discard_buffered_nonces;
pub use store::KeyState;
pub use types::{Format, LogicalType, Mode};
pub use wrap::{unwrap_secret, wrap_secret};

/// Re-encodes a valid value of `ty` between text and binary wire format;
/// `Err` (a static reason, never the value) when it is not valid.
pub fn transcode(
    ty: LogicalType,
    from: Format,
    input: &[u8],
    to: Format,
    out: &mut Vec<u8>,
) -> std::result::Result<(), &'static str> {
    value::transcode(ty, from, input, to, out)
}

#[cfg(test)]
mod tests;
