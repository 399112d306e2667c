//! Cipher-level tests: round trips of every type in both modes and both
//! wire formats (property tests), tampering, wrong column, destroyed
//! versions, random input to the decryptor, and error hygiene.

use proptest::prelude::*;

use super::column::RootSlot;
use super::envelope::{header_len, overhead};
use super::secret::Secret32;
use super::*;

const COL: &str = "public.guests.phone";

fn roots() -> (Secret32, Secret32) {
    (Secret32::new([0x11; 32]), Secret32::new([0x22; 32]))
}

/// A cipher with versions 1 and 2 live, 2 active.
fn cipher(column: &str, ty: LogicalType, mode: Mode) -> ColumnCipher {
    let (a, b) = roots();
    ColumnCipher::new(
        column,
        ty,
        mode,
        2,
        &[RootSlot::Live(&a), RootSlot::Live(&b)],
    )
    .expect("cipher")
}

fn enc(c: &ColumnCipher, v: &[u8], f: Format) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    c.encrypt(v, f, &mut out)?;
    Ok(out)
}

fn dec(c: &ColumnCipher, e: &[u8], f: Format) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    c.decrypt(e, f, &mut out)?;
    Ok(out)
}

/// Encrypts `input`, then checks that the value survives every path:
/// text and binary out, re-encryption from either, and (searchable) that
/// every spelling gives the same envelope. Returns the text rendering.
fn check_round_trip(ty: LogicalType, mode: Mode, f: Format, input: &[u8]) -> Vec<u8> {
    let c = cipher(COL, ty, mode);
    let env = enc(&c, input, f).unwrap_or_else(|e| panic!("{ty} {mode:?}: {e}"));
    let t = dec(&c, &env, Format::Text).expect("decrypt text");
    let b = dec(&c, &env, Format::Binary).expect("decrypt binary");
    let env_t = enc(&c, &t, Format::Text).unwrap_or_else(|e| panic!("{ty} re-encrypt text: {e}"));
    let env_b =
        enc(&c, &b, Format::Binary).unwrap_or_else(|e| panic!("{ty} re-encrypt binary: {e}"));
    for e in [&env_t, &env_b] {
        assert_eq!(dec(&c, e, Format::Text).expect("text"), t, "{ty}");
        assert_eq!(dec(&c, e, Format::Binary).expect("binary"), b, "{ty}");
    }
    match mode {
        Mode::Searchable => {
            assert_eq!(env, env_t, "{ty}: text spelling changed the envelope");
            assert_eq!(env, env_b, "{ty}: binary spelling changed the envelope");
        }
        Mode::Randomized => assert_ne!(env, env_t, "{ty}: randomized envelopes repeat"),
    }
    t
}

fn modes() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Randomized), Just(Mode::Searchable)]
}

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        "[a-z\u{e9}\u{4e2d} ]{0,8}".prop_map(|s| format!("\"{s}\"")),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z]{1,5}", inner), 0..5).prop_map(|kv| {
                let items: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\": {v}"))
                    .collect();
                format!("{{{}}}", items.join(","))
            }),
        ]
    })
}

/// (type, format, input, expected text output if known independently).
fn typed_value() -> impl Strategy<Value = (LogicalType, Format, Vec<u8>, Option<Vec<u8>>)> {
    use Format::{Binary as B, Text as T};
    use LogicalType as L;
    prop_oneof![
        "[^\u{0}]{0,40}".prop_map(|s| (L::Text, T, s.clone().into_bytes(), Some(s.into_bytes()))),
        "[^\u{0}]{0,40}".prop_map(|s| (
            L::Varchar,
            B,
            s.clone().into_bytes(),
            Some(s.into_bytes())
        )),
        "[^\u{0}]{0,20} {0,3}".prop_map(|s| {
            let want = s.trim_end_matches(' ').as_bytes().to_vec();
            (L::Char, T, s.into_bytes(), Some(want))
        }),
        any::<i16>().prop_map(|v| (
            L::Int2,
            T,
            format!(" {v:+05} ").into_bytes(),
            Some(v.to_string().into_bytes())
        )),
        any::<i32>().prop_map(|v| (
            L::Int4,
            B,
            v.to_be_bytes().to_vec(),
            Some(v.to_string().into_bytes())
        )),
        any::<i64>().prop_map(|v| (
            L::Int8,
            T,
            format!("{v:03}").into_bytes(),
            Some(v.to_string().into_bytes())
        )),
        (any::<bool>(), "[0-9]{0,25}", "[0-9]{0,12}", -20i32..20).prop_map(|(neg, i, f, e)| {
            let s = format!(
                "{}{}.{}e{e}",
                if neg { "-" } else { "" },
                if i.is_empty() && f.is_empty() {
                    "0"
                } else {
                    &i
                },
                f
            );
            (L::Numeric, T, s.into_bytes(), None)
        }),
        any::<f32>().prop_map(|v| (L::Float4, B, v.to_be_bytes().to_vec(), None)),
        any::<f64>().prop_map(|v| (L::Float8, B, v.to_be_bytes().to_vec(), None)),
        any::<f64>().prop_map(|v| (L::Float8, T, format!("{v:e}").into_bytes(), None)),
        any::<bool>().prop_map(|v| (
            L::Bool,
            T,
            (if v { "yes" } else { "OFF" }).into(),
            Some((if v { "t" } else { "f" }).into())
        )),
        (-2_451_545i32..=2_145_031_948).prop_map(|d| (L::Date, B, d.to_be_bytes().to_vec(), None)),
        (0i64..=86_400_000_000).prop_map(|t| (L::Time, B, t.to_be_bytes().to_vec(), None)),
        (-211_813_488_000_000_000i64..9_223_371_331_200_000_000).prop_map(|t| (
            L::Timestamp,
            B,
            t.to_be_bytes().to_vec(),
            None
        )),
        (-211_813_488_000_000_000i64..9_223_371_331_200_000_000).prop_map(|t| (
            L::Timestamptz,
            B,
            t.to_be_bytes().to_vec(),
            None
        )),
        any::<[u8; 16]>().prop_map(|u| (L::Uuid, B, u.to_vec(), None)),
        json_text().prop_map(|j| (L::Json, T, j.clone().into_bytes(), Some(j.into_bytes()))),
        json_text().prop_map(|j| (L::Jsonb, T, j.clone().into_bytes(), Some(j.into_bytes()))),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            (L::Bytea, B, b, Some(format!("\\x{hex}").into_bytes()))
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn every_type_round_trips((ty, f, input, want) in typed_value(), mode in modes()) {
        let t = check_round_trip(ty, mode, f, &input);
        if let Some(want) = want {
            prop_assert_eq!(t, want);
        }
    }

    #[test]
    fn floats_print_exactly(v in any::<f64>()) {
        let t = check_round_trip(LogicalType::Float8, Mode::Searchable, Format::Binary, &v.to_be_bytes());
        let back: f64 = std::str::from_utf8(&t).ok().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
        prop_assert!(back == v || (v.is_nan() && back.is_nan()));
    }

    #[test]
    fn random_bytes_never_decrypt(bytes in prop::collection::vec(any::<u8>(), 0..120), ty_idx in 0usize..18) {
        let ty = LogicalType::ALL[ty_idx];
        let c = cipher(COL, ty, Mode::Searchable);
        for f in [Format::Text, Format::Binary] {
            let mut out = vec![9u8];
            prop_assert!(c.decrypt(&bytes, f, &mut out).is_err());
            prop_assert_eq!(&out, &vec![9u8]);
        }
    }

    #[test]
    fn random_bodies_with_valid_headers_never_decrypt(
        body in prop::collection::vec(any::<u8>(), 28..100),
        version in 1u32..=2,
        mode in 1u8..=3,
    ) {
        let c = cipher(COL, LogicalType::Text, Mode::Randomized);
        let mut env = vec![1, mode];
        env.extend_from_slice(&version.to_be_bytes());
        env.extend_from_slice(&body);
        let e = dec(&c, &env, Format::Text).expect_err("forged envelope");
        prop_assert_eq!(e.sqlstate(), "XX001");
    }

    #[test]
    fn random_text_never_panics_the_encoder(s in prop::collection::vec(any::<u8>(), 0..40), ty_idx in 0usize..18) {
        let c = cipher(COL, LogicalType::ALL[ty_idx], Mode::Searchable);
        for f in [Format::Text, Format::Binary] {
            let mut out = vec![7u8];
            match c.encrypt(&s, f, &mut out) {
                Ok(()) => {
                    let env = out.split_off(1);
                    prop_assert!(c.decrypt(&env, Format::Text, &mut Vec::new()).is_ok());
                }
                Err(e) => {
                    prop_assert_eq!(e.sqlstate(), "22P02");
                    prop_assert_eq!(&out, &vec![7u8]);
                }
            }
        }
    }
}

#[test]
fn envelope_layout() {
    let c = cipher(COL, LogicalType::Text, Mode::Searchable);
    let env = enc(&c, b"+86 138 0013 8000", Format::Text).expect("enc");
    // Searchable: no nonce is stored (it is fixed), 22 bytes of overhead.
    assert_eq!(env.len(), 17 + 22);
    assert_eq!(env.len(), 17 + overhead(Mode::Searchable));
    assert_eq!(&env[..6], &[1, 3, 0, 0, 0, 2]);
    let r = cipher(COL, LogicalType::Text, Mode::Randomized);
    let env = enc(&r, b"x", Format::Text).expect("enc");
    assert_eq!(env.len(), 1 + 34);
    assert_eq!(&env[..2], &[1, 1]);
}

#[test]
fn canonical_spellings_share_a_searchable_envelope() {
    let c = cipher(COL, LogicalType::Int4, Mode::Searchable);
    let a = enc(&c, b"042", Format::Text).expect("042");
    let b = enc(&c, b"42", Format::Text).expect("42");
    let bin = enc(&c, &42i32.to_be_bytes(), Format::Binary).expect("bin");
    assert_eq!(a, b);
    assert_eq!(a, bin);
    assert_ne!(a, enc(&c, b"43", Format::Text).expect("43"));
    // The same value in another column gives another envelope.
    let other = cipher("public.guests.room", LogicalType::Int4, Mode::Searchable);
    assert_ne!(a, enc(&other, b"42", Format::Text).expect("other"));
}

#[test]
fn every_header_byte_is_authenticated() {
    for mode in [Mode::Randomized, Mode::Searchable] {
        let c = cipher(COL, LogicalType::Text, mode);
        let env = enc(&c, b"13800138000", Format::Text).expect("enc");
        for i in 0..env.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = env.clone();
                bad[i] ^= flip;
                let e = dec(&c, &bad, Format::Text).expect_err("tampered");
                assert_eq!(e.sqlstate(), "XX001", "byte {i}: {e}");
                if i == 0 {
                    assert!(matches!(e, CryptoError::UnknownFormat { .. }), "{e}");
                }
                if i >= header_len(mode) {
                    assert!(matches!(e, CryptoError::NotAuthentic { .. }), "{e}");
                }
            }
        }
        // A valid but different mode byte is caught by the AAD (or, read
        // as randomized, the envelope is too short for a nonce); a changed
        // version by the AAD.
        let mut other_mode = env.clone();
        other_mode[1] = if env[1] == 1 { 3 } else { 1 };
        assert!(matches!(
            dec(&c, &other_mode, Format::Text),
            Err(CryptoError::NotAuthentic { .. } | CryptoError::Truncated { .. })
        ));
        let mut longer = enc(&c, b"+86 138 0013 8000 ext. 42", Format::Text).expect("enc");
        longer[1] = if longer[1] == 1 { 3 } else { 1 };
        assert!(matches!(
            dec(&c, &longer, Format::Text),
            Err(CryptoError::NotAuthentic { .. })
        ));
        let mut other_version = env.clone();
        other_version[5] = 1;
        assert!(matches!(
            dec(&c, &other_version, Format::Text),
            Err(CryptoError::NotAuthentic { version: 1, .. })
        ));
    }
}

#[test]
fn truncation_is_detected() {
    for mode in [Mode::Randomized, Mode::Searchable] {
        let c = cipher(COL, LogicalType::Text, mode);
        let env = enc(&c, b"address line", Format::Text).expect("enc");
        for n in 0..env.len() {
            let e = dec(&c, &env[..n], Format::Text).expect_err("truncated");
            assert_eq!(e.sqlstate(), "XX001");
            if n < overhead(mode) {
                assert!(matches!(e, CryptoError::Truncated { .. }), "{n}: {e}");
            }
        }
        let mut longer = env.clone();
        longer.push(0);
        assert!(dec(&c, &longer, Format::Text).is_err());
        // The empty value has the shortest envelope of its mode.
        let empty = enc(&c, b"", Format::Text).expect("empty");
        assert_eq!(empty.len(), overhead(mode));
        assert_eq!(dec(&c, &empty, Format::Text).expect("empty"), b"");
    }
}

/// Mode byte 2, the retired pre-release searchable format (AES-CMAC nonce,
/// AES-GCM), is refused with its own typed error before any key is used,
/// whatever follows it.
#[test]
fn retired_searchable_mode_is_refused() {
    let c = cipher(COL, LogicalType::Text, Mode::Searchable);
    let mut env = enc(&c, b"13800138000", Format::Text).expect("enc");
    env[1] = 2;
    env.extend_from_slice(&[0; 12]);
    let e = dec(&c, &env, Format::Text).expect_err("retired");
    assert!(
        matches!(e, CryptoError::UnknownEnvelopeMode { mode: 2, .. }),
        "{e}"
    );
    assert_eq!(e.sqlstate(), "XX001");
    assert!(e.to_string().contains("retired"), "{e}");
}

/// A failed decryption leaves the caller's buffer exactly as it was.
#[test]
fn failed_decrypt_leaves_buffer_as_it_was() {
    for mode in [Mode::Randomized, Mode::Searchable] {
        let c = cipher(COL, LogicalType::Text, mode);
        let mut env = enc(&c, b"a value to forge", Format::Text).expect("enc");
        let last = env.len() - 1;
        env[last] ^= 1;
        let mut out = bytes::BytesMut::from(&b"kept"[..]);
        assert!(c.decrypt(&env, Format::Text, &mut out).is_err());
        assert_eq!(&out[..], b"kept");
    }
}

#[test]
fn wrong_column_does_not_decrypt() {
    let a = cipher("public.guests.phone", LogicalType::Text, Mode::Searchable);
    let b = cipher("public.guests.email", LogicalType::Text, Mode::Searchable);
    let env = enc(&a, b"a@example.com", Format::Text).expect("enc");
    let e = dec(&b, &env, Format::Text).expect_err("wrong column");
    assert!(matches!(e, CryptoError::NotAuthentic { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("public.guests.email") && msg.contains("key version 2"),
        "{msg}"
    );
}

#[test]
fn destroyed_and_unknown_versions() {
    let (a, b) = roots();
    let live = ColumnCipher::new(
        COL,
        LogicalType::Text,
        Mode::Randomized,
        2,
        &[RootSlot::Live(&a), RootSlot::Live(&b)],
    )
    .expect("cipher");
    let old_only = ColumnCipher::new(
        COL,
        LogicalType::Text,
        Mode::Randomized,
        1,
        &[RootSlot::Live(&a)],
    )
    .expect("v1");
    let env_v1 = enc(&old_only, b"x", Format::Text).expect("v1 env");
    assert_eq!(
        dec(&live, &env_v1, Format::Text).expect("v1 readable"),
        b"x"
    );
    let shredded = ColumnCipher::new(
        COL,
        LogicalType::Text,
        Mode::Randomized,
        2,
        &[RootSlot::Destroyed, RootSlot::Live(&b)],
    )
    .expect("cipher");
    let e = dec(&shredded, &env_v1, Format::Text).expect_err("destroyed");
    assert!(
        matches!(e, CryptoError::DestroyedKeyVersion { version: 1, .. }),
        "{e}"
    );
    assert_eq!(e.sqlstate(), "XX001");
    let mut v9 = env_v1.clone();
    v9[2..6].copy_from_slice(&9u32.to_be_bytes());
    let e = dec(&live, &v9, Format::Text).expect_err("unknown");
    assert!(
        matches!(e, CryptoError::UnknownKeyVersion { version: 9, .. }),
        "{e}"
    );
    let mut v0 = env_v1;
    v0[2..6].copy_from_slice(&0u32.to_be_bytes());
    assert!(matches!(
        dec(&live, &v0, Format::Text),
        Err(CryptoError::UnknownKeyVersion { version: 0, .. })
    ));
}

#[test]
fn search_envelopes_cover_every_live_version() {
    let c = cipher(COL, LogicalType::Text, Mode::Searchable);
    let all = c
        .search_envelopes(b"13800138000", Format::Text)
        .expect("search");
    assert_eq!(all.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![2, 1]);
    assert_eq!(
        all[0].1,
        enc(&c, b"13800138000", Format::Text).expect("enc")
    );
    let (a, _) = roots();
    let v1 = ColumnCipher::new(
        COL,
        LogicalType::Text,
        Mode::Searchable,
        1,
        &[RootSlot::Live(&a)],
    )
    .expect("v1");
    assert_eq!(
        all[1].1,
        enc(&v1, b"13800138000", Format::Text).expect("enc v1")
    );
    let r = cipher(COL, LogicalType::Text, Mode::Randomized);
    let e = r
        .search_envelopes(b"x", Format::Text)
        .expect_err("randomized");
    assert_eq!(e.sqlstate(), "0A000");
}

#[test]
fn errors_never_contain_the_value() {
    let secret = "SECRET-4242-VALUE";
    for ty in LogicalType::ALL {
        if matches!(
            ty,
            LogicalType::Text | LogicalType::Varchar | LogicalType::Char | LogicalType::Bytea
        ) {
            continue;
        }
        let c = cipher(COL, ty, Mode::Searchable);
        let e = enc(&c, secret.as_bytes(), Format::Text).expect_err("invalid");
        assert_eq!(e.sqlstate(), "22P02");
        let msg = e.to_string();
        assert!(
            msg.starts_with("pgveil:") && msg.contains(COL) && msg.contains(ty.name()),
            "{msg}"
        );
        assert!(!msg.contains("4242"), "{msg}");
        assert!(!format!("{e:?}").contains("4242"));
    }
}

#[test]
fn appends_without_disturbing_existing_bytes() {
    let c = cipher(COL, LogicalType::Int4, Mode::Randomized);
    let mut out = bytes::BytesMut::from(&b"prefix"[..]);
    c.encrypt(b"7", Format::Text, &mut out).expect("enc");
    let env = out.split_off(6);
    assert_eq!(&out[..], b"prefix");
    c.decrypt(&env, Format::Text, &mut out).expect("dec");
    assert_eq!(&out[..], b"prefix7");
    let mut v = b"x".to_vec();
    assert!(c.encrypt(b"seven", Format::Text, &mut v).is_err());
    assert_eq!(v, b"x");
}

#[test]
fn type_change_is_reported_not_garbled() {
    let text = cipher(COL, LogicalType::Text, Mode::Searchable);
    let env = enc(&text, b"abc", Format::Text).expect("enc");
    let as_int = cipher(COL, LogicalType::Int4, Mode::Searchable);
    let e = dec(&as_int, &env, Format::Text).expect_err("mismatch");
    assert!(matches!(e, CryptoError::TypeMismatch { .. }), "{e}");
}

#[test]
fn column_names_are_checked() {
    let (a, _) = roots();
    for bad in ["", "phone", "guests.phone", "a.b.c\n"] {
        assert!(
            ColumnCipher::new(
                bad,
                LogicalType::Text,
                Mode::Randomized,
                1,
                &[RootSlot::Live(&a)]
            )
            .is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn ciphers_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ColumnCipher>();
    assert_send_sync::<Keyring>();
}
