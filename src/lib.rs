//! pgveil: a PostgreSQL wire-protocol proxy that keeps customer personal data
//! encrypted at rest, shows each caller only what its role may see, and
//! records who saw what.
//!
//! The crate is organised along the data flow of one connection (see
//! `ARCHITECTURE.md`): [`net`] cuts bytes into frames, [`proto`] gives cheap
//! views over those frames, [`session`] runs one client connection from
//! startup to termination, and [`server`] accepts clients and owns the state
//! shared between connections. [`tls`] secures both sides, and [`admin`]
//! serves metrics, health and reload for operators.

pub mod admin;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod guard;
pub mod migrate;
pub mod net;
pub mod policy;
pub mod proto;
pub mod rewrite;
pub mod server;
pub mod session;
pub mod sql;
pub mod tempdb;
pub mod tls;
