//! Checking an audit trail: `pgveil audit verify`.
//!
//! With only the checkpoint public key, the verifier checks that sequence
//! numbers run without gaps, repeats or reordering across every file of a
//! rotated series, that each line's `prev` is the hash of the line before
//! it, and that every checkpoint's signature is valid — which seals every
//! line before it. With the master key as well, it also opens each run's
//! first MAC key and checks every record's MAC, which names the exact
//! record even when an attacker rewrote the hash links after it, and
//! covers the tail after the last checkpoint.
//!
//! It stops at the first problem and says which record, where, and what
//! kind of change explains it (altered, inserted, deleted, reordered,
//! forged checkpoint); see docs/AUDIT.md for what each check can and
//! cannot prove.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use ring::signature::{UnparsedPublicKey, ED25519};

use super::chain::{self, hex, GENESIS, SIG_DOMAIN};
use super::error::AuditError;
use crate::crypto::MasterKey;

/// What can be wrong with a trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A record's content changed.
    Altered,
    /// A line that pgveil did not write.
    Inserted,
    /// Records are missing.
    Deleted,
    /// Records are out of order.
    Reordered,
    /// A checkpoint's signature is not valid.
    Forged,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Altered => "altered",
            ProblemKind::Inserted => "inserted",
            ProblemKind::Deleted => "deleted",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Forged => "forged",
        })
    }
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of change.
    pub kind: ProblemKind,
    /// The record it concerns, when known.
    pub seq: Option<u64>,
    /// Where.
    pub file: PathBuf,
    /// 1-based line in `file`.
    pub line: usize,
    /// Explanation for the operator.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.detail, self.file.display(), self.line)
    }
}

/// How the trail ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TailState {
    /// The last record is a shutdown checkpoint: everything is sealed.
    Sealed,
    /// Records after the last checkpoint (or a last checkpoint that is
    /// not a shutdown one): pgveil is running, crashed, or the end was cut.
    Unsealed {
        /// The last checkpoint's sequence number.
        last_checkpoint: Option<u64>,
        /// Records after it.
        records_after: u64,
    },
    /// The last line is incomplete: cut mid-record.
    Torn {
        /// The file.
        file: PathBuf,
        /// Its last line.
        line: usize,
    },
    /// No records at all.
    Empty,
}

/// What was checked and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Records read (checkpoints and run starts included).
    pub records: u64,
    /// Checkpoints with a valid signature.
    pub checkpoints: u64,
    /// Runs (pgveil starts) in the trail.
    pub runs: u64,
    /// Whether every MAC was checked (master key available).
    pub macs_checked: bool,
    /// The first problem, if any.
    pub problem: Option<Problem>,
    /// How the trail ends (meaningful when there is no problem).
    pub tail: TailState,
    /// Runs that ended without a shutdown checkpoint (crashes), by the
    /// sequence number of their last record.
    pub unclean_runs: Vec<u64>,
    /// Statement records naming a query that is not written in full
    /// earlier in their file and run (by sequence number). Intact records
    /// of a trail, but not readable on their own: a file deleted under a
    /// running pgveil loses the queries later records refer to.
    pub unresolved: Vec<u64>,
}

/// What the verifier is given.
pub struct Options {
    /// The checkpoint signing key (32 bytes).
    pub public_key: Vec<u8>,
    /// The master key, to check MACs too.
    pub master: Option<MasterKey>,
    /// Accept a trail that starts after seq 0 (older files archived).
    pub partial: bool,
}

/// Reads the public key as hex (64 digits) from text or a file.
pub fn parse_public_key(arg: &str) -> Result<Vec<u8>, AuditError> {
    let text = match std::fs::read_to_string(arg) {
        Ok(t) => t,
        Err(_) => arg.to_owned(),
    };
    chain::unhex::<32>(text.trim())
        .map(|k| k.to_vec())
        .ok_or_else(|| {
            AuditError::PublicKey(format!(
                "--public-key must be 64 hex digits or a file holding them (as printed by \
                 `pgveil audit public-key`); got {:?}",
                text.trim().chars().take(80).collect::<String>()
            ))
        })
}

/// The files to check: each argument, or every visible file in an argument
/// that is a directory, in sequence order.
pub fn collect(args: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut files = Vec::new();
    for a in args {
        let meta = std::fs::metadata(a).map_err(|source| AuditError::Io {
            action: "read",
            path: a.clone(),
            source,
        })?;
        if meta.is_dir() {
            let entries = std::fs::read_dir(a).map_err(|source| AuditError::Io {
                action: "list",
                path: a.clone(),
                source,
            })?;
            for e in entries.flatten() {
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                if !hidden && e.file_type().is_ok_and(|t| t.is_file()) {
                    files.push(e.path());
                }
            }
        } else {
            files.push(a.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

struct Line<'a> {
    file: usize,
    number: usize,
    bytes: &'a [u8],
    /// The last line of the last file, without a newline.
    torn: bool,
}

/// Reads `files` and puts them in sequence order: by each one's first
/// record (rotated names sort the same way, but copies may have been
/// renamed).
pub fn read_in_order(files: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, AuditError> {
    let mut contents = Vec::with_capacity(files.len());
    for f in files {
        let bytes = std::fs::read(f).map_err(|source| AuditError::Io {
            action: "read",
            path: f.clone(),
            source,
        })?;
        contents.push((f.clone(), bytes));
    }
    contents.sort_by_key(|(name, bytes)| {
        let first = bytes
            .split(|b| *b == b'\n')
            .find(|l| !l.is_empty())
            .and_then(chain::parse)
            .and_then(|p| p.seq());
        (first.unwrap_or(u64::MAX), name.clone())
    });
    Ok(contents)
}

/// Verifies the trail in `files` (any order; they are put in sequence order).
pub fn verify(files: &[PathBuf], opts: &Options) -> Result<Report, AuditError> {
    let contents = read_in_order(files)?;
    let nfiles = contents.len();
    let mut lines = Vec::new();
    for (fi, (_, bytes)) in contents.iter().enumerate() {
        let ends_clean = bytes.is_empty() || bytes.ends_with(b"\n");
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if body.is_empty() {
            continue;
        }
        let parts: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
        let n = parts.len();
        for (i, l) in parts.into_iter().enumerate() {
            lines.push(Line {
                file: fi,
                number: i + 1,
                bytes: l,
                torn: !ends_clean && i + 1 == n,
            });
        }
    }
    let names: Vec<PathBuf> = contents.iter().map(|(n, _)| n.clone()).collect();
    Ok(Verifier {
        opts,
        names: &names,
        lines: &lines,
        last_file: nfiles.saturating_sub(1),
    }
    .run())
}

struct Verifier<'a> {
    opts: &'a Options,
    names: &'a [PathBuf],
    lines: &'a [Line<'a>],
    last_file: usize,
}

impl Verifier<'_> {
    fn problem(&self, i: usize, kind: ProblemKind, seq: Option<u64>, detail: String) -> Problem {
        let l = &self.lines[i];
        Problem {
            kind,
            seq,
            file: self.names[l.file].clone(),
            line: l.number,
            detail,
        }
    }

    fn place(&self, i: usize) -> String {
        let l = &self.lines[i];
        format!("{}:{}", self.names[l.file].display(), l.number)
    }

    fn seq_at(&self, i: usize) -> Option<u64> {
        self.lines
            .get(i)
            .and_then(|l| chain::parse(l.bytes))
            .and_then(|p| p.seq())
    }

    fn run(&self) -> Report {
        let mut report = Report {
            records: 0,
            checkpoints: 0,
            runs: 0,
            macs_checked: self.opts.master.is_some(),
            problem: None,
            tail: TailState::Empty,
            unclean_runs: Vec::new(),
            unresolved: Vec::new(),
        };
        let key = UnparsedPublicKey::new(&ED25519, self.opts.public_key.as_slice());
        let mut expected: Option<u64> = None;
        let mut prev_hash = GENESIS;
        let mut mac_state: Option<([u8; 32], [u8; 32])> = None;
        let mut since_checkpoint = 0u64;
        // Whether `since_checkpoint` counts from a known start (seq 0 or a
        // checkpoint seen), so a checkpoint's count can be compared.
        let mut count_known = false;
        let mut last_checkpoint: Option<(u64, bool)> = None;
        let mut last_kind_shutdown = false;
        // Queries written in full so far in this file and run.
        let mut queries: HashSet<u64> = HashSet::new();
        let mut file = None;
        for (i, line) in self.lines.iter().enumerate() {
            if file != Some(line.file) {
                file = Some(line.file);
                queries.clear();
            }
            let Some(p) = chain::parse(line.bytes) else {
                if line.torn && line.file == self.last_file {
                    report.tail = TailState::Torn {
                        file: self.names[line.file].clone(),
                        line: line.number,
                    };
                    return report;
                }
                let seq = expected;
                let what = if line.bytes.is_empty() {
                    "a blank line was inserted".to_owned()
                } else {
                    format!(
                        "the line where record seq {} belongs is not a sealed audit record: it was altered",
                        seq.map_or("?".into(), |s| s.to_string())
                    )
                };
                let kind = if line.bytes.is_empty() {
                    ProblemKind::Inserted
                } else {
                    ProblemKind::Altered
                };
                report.problem = Some(self.problem(i, kind, seq, what));
                return report;
            };
            let Some(seq) = p.seq() else {
                report.problem = Some(self.problem(
                    i,
                    ProblemKind::Altered,
                    expected,
                    "a record without a sequence number: it was altered".into(),
                ));
                return report;
            };
            // Order and completeness.
            match expected {
                None if seq != 0 && !self.opts.partial => {
                    report.problem = Some(self.problem(
                        i,
                        ProblemKind::Deleted,
                        Some(0),
                        format!(
                            "the trail starts at record seq {seq}: records seq 0..{} are missing \
                             (deleted; pass --partial if older files were archived)",
                            seq - 1
                        ),
                    ));
                    return report;
                }
                None => count_known = seq == 0,
                Some(e) if seq > e => {
                    let later = (i + 1..self.lines.len()).find(|&j| self.seq_at(j) == Some(e));
                    report.problem = Some(match later {
                        Some(j) => self.problem(
                            i,
                            ProblemKind::Reordered,
                            Some(e),
                            format!(
                                "record seq {e} was reordered: it is at {}, after record seq {seq}",
                                self.place(j)
                            ),
                        ),
                        None if seq == e + 1 => self.problem(
                            i,
                            ProblemKind::Deleted,
                            Some(e),
                            format!(
                                "record seq {e} was deleted: record seq {seq} follows seq {}",
                                e - 1
                            ),
                        ),
                        None => self.problem(
                            i,
                            ProblemKind::Deleted,
                            Some(e),
                            format!(
                                "records seq {e}..{} were deleted: record seq {seq} follows seq {}",
                                seq - 1,
                                e.saturating_sub(1)
                            ),
                        ),
                    });
                    return report;
                }
                Some(e) if seq < e => {
                    // A repeat. If the line after links to this one, the
                    // previous line (same seq) was the inserted one.
                    let next_links_here = self
                        .lines
                        .get(i + 1)
                        .and_then(|l| chain::parse(l.bytes))
                        .and_then(|n| {
                            let here = chain::line_link(line.bytes)?;
                            n.str("prev").map(|s| s == hex(&here))
                        })
                        .unwrap_or(false);
                    report.problem = Some(if seq + 1 == e && next_links_here && i > 0 {
                        self.problem(
                            i - 1,
                            ProblemKind::Inserted,
                            Some(seq),
                            format!(
                                "the line claiming record seq {seq} was inserted: the genuine record \
                                 seq {seq} follows it at {}",
                                self.place(i)
                            ),
                        )
                    } else {
                        self.problem(
                            i,
                            ProblemKind::Inserted,
                            Some(seq),
                            format!(
                                "a line repeating record seq {seq} was inserted (expected seq {e})"
                            ),
                        )
                    });
                    return report;
                }
                Some(_) => {}
            }
            // The MAC chain, when the master key is at hand.
            if let Some(master) = &self.opts.master {
                if p.kind() == "start" {
                    let run = p.str("run").unwrap_or("");
                    let aad = format!("{}{run}", chain::KEY_WRAP_DOMAIN);
                    let k0 = p
                        .str("wrapped_key")
                        .and_then(|w| crate::crypto::unwrap_secret(master, aad.as_bytes(), w));
                    match k0 {
                        Some(k)
                            if p.str("key_commit") == Some(hex(&chain::commit(&k)).as_str()) =>
                        {
                            mac_state = Some((k, [0; 32]));
                        }
                        _ => {
                            report.problem = Some(self.problem(
                                i,
                                ProblemKind::Altered,
                                Some(seq),
                                format!(
                                    "record seq {seq} (a run start) was altered: its MAC key does not \
                                     open with the master key or does not match its commitment"
                                ),
                            ));
                            return report;
                        }
                    }
                }
                if let Some((k, prev_mac)) = mac_state.as_mut() {
                    if chain::mac(k, prev_mac, &chain::body_digest(p.mac_body)) != p.mac {
                        report.problem = Some(self.problem(
                            i,
                            ProblemKind::Altered,
                            Some(seq),
                            format!(
                                "record seq {seq} was altered or inserted: its MAC does not verify"
                            ),
                        ));
                        return report;
                    }
                    *prev_mac = p.mac;
                    *k = chain::next_key(k);
                }
            }
            // The hash link.
            if expected.is_some() && p.str("prev") != Some(hex(&prev_hash).as_str()) {
                let next_same = self.seq_at(i + 1) == Some(seq);
                report.problem = Some(if next_same {
                    self.problem(
                        i,
                        ProblemKind::Inserted,
                        Some(seq),
                        format!(
                            "a line claiming record seq {seq} was inserted: its link does not match \
                             the record before it, and the next line is seq {seq} too"
                        ),
                    )
                } else if mac_state.is_some() || i == 0 {
                    self.problem(
                        i,
                        ProblemKind::Altered,
                        Some(seq),
                        format!("record seq {seq} was altered: its link to the record before it is wrong"),
                    )
                } else {
                    self.problem(
                        i - 1,
                        ProblemKind::Altered,
                        Some(seq - 1),
                        format!(
                            "record seq {} was altered: its hash no longer matches the link in \
                             record seq {seq} at {}",
                            seq - 1,
                            self.place(i)
                        ),
                    )
                });
                return report;
            }
            // Checkpoints seal everything before them.
            if p.kind() == "checkpoint" {
                let valid = p.signed.is_some_and(|(body, sig)| {
                    let mut msg = Vec::with_capacity(SIG_DOMAIN.len() + body.len());
                    msg.extend_from_slice(SIG_DOMAIN);
                    msg.extend_from_slice(body);
                    key.verify(&msg, &sig).is_ok()
                });
                if !valid {
                    let from = last_checkpoint.map_or(0, |(s, _)| s + 1);
                    report.problem = Some(self.problem(
                        i,
                        ProblemKind::Forged,
                        Some(seq),
                        format!(
                            "checkpoint seq {seq} is forged: its signature does not verify with the \
                             public key (the checkpoint, or one of records seq {from}..{} whose \
                             links were rewritten, was altered)",
                            seq.saturating_sub(1)
                        ),
                    ));
                    return report;
                }
                let counted = p.fields.get("records").and_then(serde_json::Value::as_u64);
                if count_known && counted != Some(since_checkpoint) {
                    report.problem = Some(self.problem(
                        i,
                        ProblemKind::Deleted,
                        Some(seq),
                        format!(
                            "checkpoint seq {seq} seals {} records but {since_checkpoint} precede it \
                             since the previous checkpoint",
                            counted.unwrap_or(0)
                        ),
                    ));
                    return report;
                }
                if let Some((k, _)) = &mac_state {
                    // `k` has already moved to the next record's key.
                    if p.str("key_commit") != Some(hex(&chain::commit(k)).as_str()) {
                        report.problem = Some(self.problem(
                            i,
                            ProblemKind::Altered,
                            Some(seq),
                            format!("checkpoint seq {seq} commits to a different MAC key: altered"),
                        ));
                        return report;
                    }
                }
                report.checkpoints += 1;
                since_checkpoint = 0;
                count_known = true;
                let shutdown = p.str("reason") == Some("shutdown");
                last_checkpoint = Some((seq, shutdown));
                last_kind_shutdown = shutdown;
            } else {
                if p.kind() == "statement" {
                    let query = p.fields.get("query").and_then(serde_json::Value::as_u64);
                    match query {
                        Some(q) if p.fields.contains_key("fingerprint") => {
                            queries.insert(q);
                        }
                        Some(q) if !queries.contains(&q) => report.unresolved.push(seq),
                        _ => {}
                    }
                }
                if p.kind() == "start" {
                    queries.clear();
                    if report.runs > 0 && !last_kind_shutdown {
                        report.unclean_runs.push(seq.saturating_sub(1));
                    }
                    report.runs += 1;
                    // A new run counts from its start record.
                    since_checkpoint = 0;
                }
                since_checkpoint += 1;
                last_kind_shutdown = false;
            }
            report.records += 1;
            prev_hash = chain::link(&chain::body_digest(p.mac_body), &p.mac);
            expected = Some(seq + 1);
        }
        report.tail = match (report.records, last_kind_shutdown) {
            (0, _) => TailState::Empty,
            (_, true) => TailState::Sealed,
            _ => TailState::Unsealed {
                last_checkpoint: last_checkpoint.map(|(s, _)| s),
                records_after: since_checkpoint,
            },
        };
        report
    }
}
