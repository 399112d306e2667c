//! The integrity chain: how one record becomes one sealed line.
//!
//! Every line is a JSON object: the event's own fields, then the chain's,
//! added here:
//!
//! ```text
//! {"kind":"…",…,"seq":7,"ts":"…","prev":"<H(line 6)>","mac":"<MAC 7>"}
//! {"kind":"checkpoint",…,"seq":8,"ts":"…","prev":"<H(line 7)>","sig":"<Ed25519>","mac":"<MAC 8>"}
//! ```
//!
//! * the line's *body* is everything before `,"mac"`, and its digest
//!   `d_i = SHA-256("pgveil audit v1 body\0" ‖ body)` is the one pass over
//!   the line's bytes. The event comes first so that a start that repeats
//!   from record to record (a prepared statement's fingerprint and
//!   columns, see [`Head`]) is hashed once, not once per record;
//! * `mac` is `HMAC-SHA256(k_i, mac_{i-1} ‖ d_i)`; the key then moves
//!   forward, `k_{i+1} = SHA-256(k_i)`, and `k_i` is overwritten. Each run
//!   starts a chain with a random `k_0` and `mac_{-1}` = 32 zero bytes;
//! * `prev` of the next line is the *link* `SHA-256("pgveil audit v1
//!   link\0" ‖ d_i ‖ mac_i)`, across restarts and rotated files, so order
//!   and completeness are fixed and anyone can check them;
//! * `sig` (checkpoints only) is an Ed25519 signature over
//!   `"pgveil audit v1 checkpoint\0" ‖ the line up to ,"sig"` — it covers
//!   `prev`, so one signature seals every line before it.
//!
//! The suffixes have fixed lengths, so a verifier recovers the exact bytes
//! that were hashed, signed and MACed without re-serializing JSON.

use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest::{digest, Context, SHA256};
use ring::hmac;
use ring::signature::Ed25519KeyPair;

use super::record::{write_rfc3339, write_u64, Event, Stamped, StatementView};

/// Domain separation for body digests.
const BODY_DOMAIN: &[u8] = b"pgveil audit v1 body\0";
/// Domain separation for links.
const LINK_DOMAIN: &[u8] = b"pgveil audit v1 link\0";
/// Domain separation for checkpoint signatures.
pub const SIG_DOMAIN: &[u8] = b"pgveil audit v1 checkpoint\0";
/// Domain separation for MAC key commitments.
const COMMIT_DOMAIN: &[u8] = b"pgveil audit v1 key commitment\0";
/// AAD binding a wrapped run key to its run.
pub const KEY_WRAP_DOMAIN: &str = "pgveil audit v1 mac key ";

/// `,"mac":"` + 64 hex + `"}`.
pub const MAC_SUFFIX_LEN: usize = 8 + 64 + 2;
/// `,"sig":"` + 128 hex + `"`.
pub const SIG_SUFFIX_LEN: usize = 8 + 128 + 1;
/// The `prev` of the very first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut v = Vec::with_capacity(bytes.len() * 2);
    hex_into(bytes, &mut v);
    String::from_utf8(v).unwrap_or_default()
}

/// Appends lowercase hex of `bytes` to `out` (two hex fields per record:
/// converted 32 bytes at a time on the stack, appended in one copy).
pub fn hex_into(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (pair, b) in buf.chunks_exact_mut(2).zip(chunk) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        out.extend_from_slice(&buf[..chunk.len() * 2]);
    }
}

/// Parses lowercase or uppercase hex of exactly `N` bytes.
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// The digest of a line's body (the line up to `,"mac"`).
pub fn body_digest(body: &[u8]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(BODY_DOMAIN);
    ctx.update(body);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The link the following record's `prev` must hold.
pub fn link(digest: &[u8; 32], mac: &[u8; 32]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(LINK_DOMAIN);
    ctx.update(digest);
    ctx.update(mac);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The link of a whole line (without its newline); `None` when it is not
/// a sealed record.
pub fn line_link(line: &[u8]) -> Option<[u8; 32]> {
    let (body, mac) = split_mac(line)?;
    Some(link(&body_digest(body), &mac))
}

/// The next MAC key.
pub fn next_key(key: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, key).as_ref());
    out
}

/// A public commitment to a MAC key (reveals nothing about it).
pub fn commit(key: &[u8; 32]) -> [u8; 32] {
    let mut ctx = Context::new(&SHA256);
    ctx.update(COMMIT_DOMAIN);
    ctx.update(key);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `HMAC-SHA256(key, prev_mac ‖ digest)`.
pub fn mac(key: &[u8; 32], prev_mac: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(prev_mac);
    ctx.update(digest);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Ids of queries, unique within the process (and so within a run).
static QUERIES: AtomicU64 = AtomicU64::new(1);
/// Ids of the files a chain writes into, unique within the process: a
/// query written in full to one file is not referred to from another.
static FILES: AtomicU64 = AtomicU64::new(1);

/// A prepared statement's *query*: the start of its records that repeats
/// from one execution to the next, `{"kind":"statement","query":<id>,
/// "fingerprint":…,"tables":…,"columns":…`, with the body digest's SHA-256
/// state after it.
///
/// The first record of the query in each file carries all of it: the
/// chain copies the bytes and continues the digest from that state, so
/// its SHA-256 pass covers only what follows. Later records in the same
/// file carry only `{"kind":"statement","query":<id>` and refer to that
/// first one (docs/AUDIT.md): the read mix's records are 340 bytes
/// instead of 757 to write, cache and read (sealing costs about the same
/// either way). The bytes and the state are made together here and cannot
/// disagree.
pub struct Head {
    query: u64,
    bytes: Vec<u8>,
    state: Context,
    /// The chain's `file` this query was last written to in full (0:
    /// never). Changed under the sealing lock only.
    written_in: AtomicU64,
}

impl Head {
    /// The head of `statement`'s records under a new query id.
    pub fn of(statement: &StatementView<'_>) -> Self {
        let query = QUERIES.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::new();
        statement.write_head(Some(query), &mut bytes);
        let mut state = Context::new(&SHA256);
        state.update(BODY_DOMAIN);
        state.update(&bytes);
        Head {
            query,
            bytes,
            state,
            written_in: AtomicU64::new(0),
        }
    }

    /// The line's first bytes, as the query's first record in a file has them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The query's id.
    pub fn query(&self) -> u64 {
        self.query
    }
}

impl std::fmt::Debug for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Head")
            .field("bytes", &String::from_utf8_lossy(&self.bytes))
            .finish_non_exhaustive()
    }
}

/// The writer's chain state: where the next line goes and how it is sealed.
pub struct Chain {
    /// Sequence number of the next record.
    pub seq: u64,
    /// Link of the last line written (or [`GENESIS`]).
    pub prev_hash: [u8; 32],
    key: [u8; 32],
    prev_mac: [u8; 32],
    /// Records since the last checkpoint.
    pub since_checkpoint: u64,
    /// Which file the lines go to (see [`Head`]); changes with
    /// [`Chain::new_file`].
    file: u64,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("seq", &self.seq)
            .field("since_checkpoint", &self.since_checkpoint)
            .finish_non_exhaustive()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.key.fill(0);
    }
}

impl Chain {
    /// A chain continuing after `seq - 1` whose last line hashed to
    /// `prev_hash`, with a fresh run key `key`.
    pub fn new(seq: u64, prev_hash: [u8; 32], key: [u8; 32]) -> Self {
        Chain {
            seq,
            prev_hash,
            key,
            prev_mac: [0; 32],
            since_checkpoint: 0,
            file: FILES.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The lines sealed from now on go to a new file: each query is
    /// written in full again on its first record there, so that every
    /// file of a rotated series can be read on its own.
    pub fn new_file(&mut self) {
        self.file = FILES.fetch_add(1, Ordering::Relaxed);
    }

    /// Commitment to the key that will MAC the next record.
    pub fn current_commit(&self) -> [u8; 32] {
        commit(&self.key)
    }

    /// Appends one sealed record line (with its newline) to `out`.
    pub fn seal(&mut self, rec: &Stamped, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        self.seal_with(rec.ts, None, None, out, |out| write_event(&rec.event, out))?;
        self.since_checkpoint += 1;
        Ok(())
    }

    /// Appends one sealed statement record: the hot path, written by hand
    /// from borrowed parts instead of through serde. A query already
    /// written in full to this file is referred to by its id (see [`Head`]).
    pub fn seal_statement(
        &mut self,
        ts: std::time::SystemTime,
        statement: &StatementView<'_>,
        out: &mut Vec<u8>,
    ) {
        let head = statement.written;
        let referred = head.filter(|h| h.written_in.load(Ordering::Relaxed) == self.file);
        let copied = if referred.is_some() { None } else { head };
        // A copied head is written by the chain; the rest here.
        let sealed = self.seal_with(ts, None, copied, out, |out| {
            match (referred, copied) {
                (Some(h), _) => StatementView::write_reference(h.query, out),
                (None, Some(_)) => {}
                (None, None) => statement.write_head(None, out),
            }
            statement.write_rest(out);
            Ok(())
        });
        debug_assert!(sealed.is_ok(), "writing by hand cannot fail");
        if let Some(h) = copied {
            h.written_in.store(self.file, Ordering::Relaxed);
        }
        self.since_checkpoint += 1;
    }

    /// Appends a signed checkpoint line; `reason` says why it was written.
    pub fn checkpoint(
        &mut self,
        ts: std::time::SystemTime,
        reason: &str,
        signer: &Ed25519KeyPair,
        out: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        // The checkpoint's own MAC uses the current key; it commits to the
        // one after it.
        let event = Event::Checkpoint {
            reason: reason.to_owned(),
            records: self.since_checkpoint,
            key_commit: hex(&commit(&next_key(&self.key))),
        };
        self.seal_with(ts, Some(signer), None, out, |out| write_event(&event, out))?;
        self.since_checkpoint = 0;
        Ok(())
    }

    /// Seals one line: `head` (when given) and what `fields` appends are
    /// the event (`{"kind":"…",…`, no closing brace), then come the chain's
    /// fields. On error nothing is appended and the chain does not move.
    fn seal_with(
        &mut self,
        ts: std::time::SystemTime,
        signer: Option<&Ed25519KeyPair>,
        head: Option<&Head>,
        out: &mut Vec<u8>,
        fields: impl FnOnce(&mut Vec<u8>) -> Result<(), serde_json::Error>,
    ) -> Result<(), serde_json::Error> {
        let start = out.len();
        // The digest continues from the head's state over the bytes after it.
        let (mut body, hashed_from) = match head {
            Some(head) => {
                out.extend_from_slice(&head.bytes);
                (head.state.clone(), out.len())
            }
            None => {
                let mut ctx = Context::new(&SHA256);
                ctx.update(BODY_DOMAIN);
                (ctx, start)
            }
        };
        if let Err(e) = fields(out) {
            out.truncate(start);
            return Err(e);
        }
        out.extend_from_slice(b",\"seq\":");
        write_u64(out, self.seq);
        out.extend_from_slice(b",\"ts\":\"");
        write_rfc3339(ts, out);
        out.extend_from_slice(b"\",\"prev\":\"");
        hex_into(&self.prev_hash, out);
        out.push(b'"');
        if let Some(signer) = signer {
            let mut msg = Vec::with_capacity(SIG_DOMAIN.len() + out.len() - start);
            msg.extend_from_slice(SIG_DOMAIN);
            msg.extend_from_slice(&out[start..]);
            let sig = signer.sign(&msg);
            out.extend_from_slice(b",\"sig\":\"");
            hex_into(sig.as_ref(), out);
            out.push(b'"');
        }
        body.update(&out[hashed_from..]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(body.finish().as_ref());
        let m = mac(&self.key, &self.prev_mac, &digest);
        out.extend_from_slice(b",\"mac\":\"");
        hex_into(&m, out);
        out.extend_from_slice(b"\"}\n");
        self.prev_hash = link(&digest, &m);
        self.prev_mac = m;
        let next = next_key(&self.key);
        self.key.fill(0);
        self.key = next;
        self.seq += 1;
        Ok(())
    }
}

/// Appends an event's fields through serde, as `{"kind":"…",…` (the
/// closing brace dropped so the chain's fields follow).
fn write_event(event: &Event, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    let at = out.len();
    serde_json::to_writer(&mut *out, event)?;
    if out.len() < at + 3 || out.get(at) != Some(&b'{') || out.last() != Some(&b'}') {
        out.truncate(at);
        return Err(serde::ser::Error::custom(
            "an event must serialize as an object with fields",
        ));
    }
    out.pop();
    Ok(())
}

/// One line split into what was hashed, signed and MACed.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// The line up to `,"mac"` (what the MAC covers).
    pub mac_body: &'a [u8],
    /// The MAC.
    pub mac: [u8; 32],
    /// For checkpoints: the line up to `,"sig"` and the signature.
    pub signed: Option<(&'a [u8], [u8; 64])>,
    /// The fields, parsed.
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Parsed<'_> {
    /// The record's sequence number.
    pub fn seq(&self) -> Option<u64> {
        self.fields.get("seq").and_then(serde_json::Value::as_u64)
    }

    /// The record's kind.
    pub fn kind(&self) -> &str {
        self.fields
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
    }

    /// A string field.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(serde_json::Value::as_str)
    }
}

/// The body and MAC of a line.
fn split_mac(line: &[u8]) -> Option<(&[u8], [u8; 32])> {
    let cut = line.len().checked_sub(MAC_SUFFIX_LEN)?;
    let (body, suffix) = line.split_at(cut);
    let hexmac = suffix.strip_prefix(b",\"mac\":\"")?.strip_suffix(b"\"}")?;
    Some((body, unhex::<32>(std::str::from_utf8(hexmac).ok()?)?))
}

/// Splits a line (without its newline); `None` when it is not a sealed
/// record.
pub fn parse(line: &[u8]) -> Option<Parsed<'_>> {
    let (mac_body, mac) = split_mac(line)?;
    let mut signed = None;
    let mut body = mac_body;
    if let Some(cut) = mac_body.len().checked_sub(SIG_SUFFIX_LEN) {
        let (head, sig) = mac_body.split_at(cut);
        if let Some(hexsig) = sig
            .strip_prefix(b",\"sig\":\"")
            .and_then(|s| s.strip_suffix(b"\""))
        {
            let sig = unhex::<64>(std::str::from_utf8(hexsig).ok()?)?;
            signed = Some((head, sig));
            body = head;
        }
    }
    let mut json = Vec::with_capacity(body.len() + 1);
    json.extend_from_slice(body);
    json.push(b'}');
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json).ok()?;
    Some(Parsed {
        mac_body,
        mac,
        signed,
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Event;

    fn signer() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("seed")
    }

    fn reload(key: [u8; 32]) -> Stamped {
        let _ = key;
        Stamped {
            ts: std::time::UNIX_EPOCH,
            event: Event::ConfigReloaded {
                path: "p".into(),
                outcome: "ok".into(),
                detail: None,
            },
        }
    }

    #[test]
    fn lines_link_mac_and_sign() {
        let k0 = [1u8; 32];
        let mut c = Chain::new(0, GENESIS, k0);
        let mut out = Vec::new();
        c.seal(&reload(k0), &mut out).expect("seal");
        c.seal(&reload(k0), &mut out).expect("seal");
        c.checkpoint(std::time::UNIX_EPOCH, "count", &signer(), &mut out)
            .expect("checkpoint");
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 3);
        let mut prev = GENESIS;
        let mut key = k0;
        let mut prev_mac = [0u8; 32];
        for (i, line) in lines.iter().enumerate() {
            let p = parse(line).expect("parse");
            assert_eq!(p.seq(), Some(i as u64));
            assert_eq!(p.str("prev"), Some(hex(&prev).as_str()));
            let d = body_digest(p.mac_body);
            assert_eq!(p.mac, mac(&key, &prev_mac, &d));
            prev = link(&d, &p.mac);
            assert_eq!(line_link(line), Some(prev));
            prev_mac = p.mac;
            key = next_key(&key);
        }
        let cp = parse(lines[2]).expect("checkpoint");
        assert_eq!(cp.kind(), "checkpoint");
        let (body, sig) = cp.signed.expect("signed");
        let mut msg = SIG_DOMAIN.to_vec();
        msg.extend_from_slice(body);
        let pk = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ED25519,
            ring::signature::KeyPair::public_key(&signer())
                .as_ref()
                .to_vec(),
        );
        pk.verify(&msg, &sig).expect("signature");
        // The checkpoint commits to the key of the record after it.
        assert_eq!(cp.str("key_commit"), Some(hex(&commit(&key)).as_str()));
        assert_eq!(cp.fields["records"], 2);
    }

    #[test]
    fn a_query_is_written_in_full_once_per_file_and_referred_to_after() {
        use crate::audit::record::{ColumnUse, Outcome};
        use crate::audit::ColumnAction;
        let shown = [ColumnUse {
            column: "public.guests.phone".into(),
            action: ColumnAction::Clear,
        }];
        let view = |rows, written| StatementView {
            conn: 4,
            user: "amy",
            role: Some("desk"),
            fingerprint: Some("SELECT phone FROM guests WHERE id = ?"),
            shown: &shown,
            planned: &shown,
            rows,
            bytes: 9,
            affected: None,
            outcome: Outcome::Ok,
            sqlstate: None,
            duration_us: 5,
            approval: None,
            written,
        };
        let head = Head::of(&view(0, None));
        let q = head.query();
        let mut chain = Chain::new(3, GENESIS, [5; 32]);
        let mut out = Vec::new();
        for rows in [1, 2] {
            chain.seal_statement(std::time::UNIX_EPOCH, &view(rows, Some(&head)), &mut out);
        }
        chain.new_file();
        chain.seal_statement(std::time::UNIX_EPOCH, &view(3, Some(&head)), &mut out);
        chain.seal_statement(std::time::UNIX_EPOCH, &view(4, None), &mut out);
        let lines: Vec<&[u8]> = out
            .split(|c| *c == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        // In full where the query first appears in a file; by id after.
        let full = |line: &[u8], rows: u64| {
            let mut expected = Vec::new();
            view(rows, None).write_head(Some(q), &mut expected);
            view(rows, None).write_rest(&mut expected);
            assert!(
                line.starts_with(&expected),
                "{}",
                String::from_utf8_lossy(line)
            );
        };
        full(lines[0], 1);
        let mut reference = Vec::new();
        StatementView::write_reference(q, &mut reference);
        view(2, None).write_rest(&mut reference);
        assert!(lines[1].starts_with(&reference));
        full(lines[2], 3);
        let p = parse(lines[3]).expect("a sealed line");
        assert!(p.fields.get("query").is_none() && p.str("fingerprint").is_some());
        // And each line's MAC is the one a verifier recomputes from the
        // whole line: a copied digest state hashes the same bytes.
        let mut key = [5u8; 32];
        let mut prev_mac = [0u8; 32];
        for line in lines {
            let p = parse(line).expect("a sealed line");
            assert_eq!(p.kind(), "statement");
            assert_eq!(p.mac, mac(&key, &prev_mac, &body_digest(p.mac_body)));
            prev_mac = p.mac;
            key = next_key(&key);
        }
    }

    #[test]
    fn parse_rejects_damaged_lines() {
        let mut c = Chain::new(0, GENESIS, [2; 32]);
        let mut out = Vec::new();
        c.seal(&reload([0; 32]), &mut out).expect("seal");
        let line = &out[..out.len() - 1];
        assert!(parse(line).is_some());
        assert!(parse(&line[..line.len() - 1]).is_none());
        assert!(parse(b"{}").is_none());
        assert!(parse(b"").is_none());
        let mut bad = line.to_vec();
        bad[0] = b'#';
        assert!(parse(&bad).is_none());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(hex(&[]), "");
        // Longer than one 32-byte chunk.
        let long: Vec<u8> = (0..=70).collect();
        let mut expected = String::new();
        for b in &long {
            expected.push_str(&format!("{b:02x}"));
        }
        assert_eq!(hex(&long), expected);
        assert_eq!(unhex::<3>("00FF10"), Some([0, 255, 16]));
        assert_eq!(unhex::<2>("00ff10"), None);
        assert_eq!(unhex::<1>("zz"), None);
    }
}
