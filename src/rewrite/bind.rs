//! Bound parameters bound for protected columns: Parse gets the server-side
//! types (bytea, bytea[]), ParameterDescription shows the client the
//! logical types, and Bind carries envelopes instead of plaintext.

use super::{crypto_refusal, Snapshot};
use crate::crypto::Format;
use crate::proto::extended::{encode_bind, Bind};
use crate::sql::{ParamTarget, ParamUsage, Refusal};
use bytes::{BufMut, BytesMut};

/// `bytea`.
pub const BYTEA_OID: u32 = 17;
/// `bytea[]`.
pub const BYTEA_ARRAY_OID: u32 = 1001;

/// Declared parameter types for Parse: protected positions get the type the
/// server must see, whatever the client declared.
pub fn server_param_types(declared: &[u32], targets: &[ParamTarget]) -> Vec<u32> {
    let needed = targets.iter().map(|t| t.index).max().unwrap_or(0);
    let mut types = declared.to_vec();
    if types.len() < needed {
        types.resize(needed, 0);
    }
    for t in targets {
        if let Some(slot) = t.index.checked_sub(1).and_then(|i| types.get_mut(i)) {
            *slot = match t.usage {
                ParamUsage::Value | ParamUsage::MatchOne => BYTEA_OID,
                ParamUsage::MatchArray => BYTEA_ARRAY_OID,
            };
        }
    }
    types
}

/// ParameterDescription as the client must see it: logical types at the
/// protected positions.
pub fn client_param_types(server: &[u32], targets: &[ParamTarget]) -> Vec<u32> {
    let mut types = server.to_vec();
    for t in targets {
        if let Some(slot) = t.index.checked_sub(1).and_then(|i| types.get_mut(i)) {
            *slot = t.column.logical_type.oid();
        }
    }
    types
}

/// Re-encodes a Bind with protected parameters encrypted. Protected
/// parameters are sent in binary format (an envelope, or a bytea[] of
/// envelopes for equality matching); the others keep their format.
pub fn encrypt_bind(
    snapshot: &Snapshot,
    bind: &Bind<'_>,
    targets: &[ParamTarget],
    out: &mut BytesMut,
) -> Result<(), Refusal> {
    let mut formats: Vec<i16> = (0..bind.params.len())
        .map(|i| bind.param_format(i))
        .collect();
    let mut encrypted: Vec<Option<Vec<u8>>> = vec![None; bind.params.len()];
    for t in targets {
        let Some(i) = t.index.checked_sub(1).filter(|i| *i < bind.params.len()) else {
            continue; // the server reports the parameter count mismatch itself
        };
        let Some(value) = bind.params[i] else {
            continue; // NULL stays NULL
        };
        let format = if bind.param_format(i) == 1 {
            Format::Binary
        } else {
            Format::Text
        };
        let cipher = snapshot.cipher(&t.column)?;
        let mut buf = Vec::new();
        match t.usage {
            ParamUsage::Value => cipher
                .encrypt(value, format, &mut buf)
                .map_err(crypto_refusal)?,
            ParamUsage::MatchArray => {
                let envs = cipher
                    .search_envelopes(value, format)
                    .map_err(crypto_refusal)?;
                write_bytea_array(&mut buf, envs.iter().map(|(_, e)| e.as_slice()));
            }
            ParamUsage::MatchOne => {
                let mut envs = cipher
                    .search_envelopes(value, format)
                    .map_err(crypto_refusal)?;
                // The statement was rendered for one live key version; with
                // more it would miss rows stored under the others.
                if envs.len() != 1 {
                    return Err(Refusal {
                        sqlstate: "0A000",
                        message: format!(
                            "pgveil: this statement was prepared before a key rotation of column \
                             {}; prepare it again (or reconnect)",
                            t.column.full_name
                        ),
                    });
                }
                if let Some((_, env)) = envs.pop() {
                    buf = env;
                }
            }
        }
        crate::admin::metrics().encrypted(cipher.column());
        formats[i] = 1;
        encrypted[i] = Some(buf);
    }
    let params: Vec<Option<&[u8]>> = bind
        .params
        .iter()
        .zip(&encrypted)
        .map(|(orig, enc)| match enc {
            Some(e) => Some(e.as_slice()),
            None => *orig,
        })
        .collect();
    encode_bind(
        out,
        bind.portal,
        bind.statement,
        &formats,
        &params,
        bind.result_formats,
    );
    Ok(())
}

/// PostgreSQL's binary array format for a one-dimensional bytea[].
fn write_bytea_array<'a>(out: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'a [u8]>) {
    let n = items.len();
    out.put_i32(1); // dimensions
    out.put_i32(0); // no NULLs
    out.put_u32(BYTEA_OID);
    out.put_i32(n as i32);
    out.put_i32(1); // lower bound
    for item in items {
        out.put_i32(item.len() as i32);
        out.put_slice(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytea_array_layout() {
        let mut out = Vec::new();
        write_bytea_array(&mut out, [&b"ab"[..], &b"c"[..]].into_iter());
        assert_eq!(
            out,
            [
                0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2, b'a',
                b'b', 0, 0, 0, 1, b'c'
            ]
        );
    }
}
