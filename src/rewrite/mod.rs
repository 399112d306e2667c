//! Applying SQL plans with the keyring: what the session calls to turn a
//! client's statement into the one the server may see.

pub mod copy;
