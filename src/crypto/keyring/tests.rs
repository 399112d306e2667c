//! Keyring tests on real directories: rotation keeps old data readable and
//! searchable, destruction shreds it, and the signing key persists.

use super::*;
use crate::crypto::{CryptoError, Format};

const COL: &str = "public.guests.phone";

fn enc(c: &ColumnCipher, v: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    c.encrypt(v, Format::Text, &mut out).expect("encrypt");
    out
}

fn dec(c: &ColumnCipher, e: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    c.decrypt(e, Format::Text, &mut out)?;
    Ok(out)
}

#[test]
fn rotation_keeps_old_data_and_search_working() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("kr");
    let master = MasterKey::from_bytes([8; 32]);
    let mut kr = Keyring::init(&dir, &master, None).expect("init");
    assert_eq!(kr.active_version(), 1);
    let c1 = kr
        .column(COL, LogicalType::Text, Mode::Searchable)
        .expect("c1");
    let r1 = kr
        .column(COL, LogicalType::Text, Mode::Randomized)
        .expect("r1");
    let s_old = enc(&c1, b"13800138000");
    let r_old = enc(&r1, b"13800138000");

    assert_eq!(kr.rotate().expect("rotate"), 2);
    assert_eq!(kr.active_version(), 2);
    let states: Vec<_> = kr.versions().map(|v| (v.version, v.state)).collect();
    assert_eq!(
        states,
        vec![(1, KeyState::DecryptOnly), (2, KeyState::Active)]
    );

    // A reopened keyring sees the same thing.
    let kr2 = Keyring::open(&dir, &master).expect("reopen");
    assert_eq!(kr2.active_version(), 2);
    let c2 = kr2
        .column(COL, LogicalType::Text, Mode::Searchable)
        .expect("c2");
    assert_eq!(dec(&c2, &s_old).expect("old searchable"), b"13800138000");
    assert_eq!(dec(&c2, &r_old).expect("old randomized"), b"13800138000");
    let s_new = enc(&c2, b"13800138000");
    assert_eq!(&s_new[2..6], &2u32.to_be_bytes());
    assert_ne!(s_new, s_old);
    let all = c2
        .search_envelopes(b"13800138000", Format::Text)
        .expect("search");
    let envs: Vec<_> = all.iter().map(|(_, e)| e.clone()).collect();
    assert_eq!(envs, vec![s_new.clone(), s_old.clone()]);

    // Destroy version 1: old data is shredded, new data unaffected.
    kr.destroy(1).expect("destroy");
    let c3 = kr
        .column(COL, LogicalType::Text, Mode::Searchable)
        .expect("c3");
    assert!(matches!(
        dec(&c3, &s_old),
        Err(CryptoError::DestroyedKeyVersion { version: 1, .. })
    ));
    assert!(matches!(
        dec(&c3, &r_old),
        Err(CryptoError::DestroyedKeyVersion { version: 1, .. })
    ));
    assert_eq!(dec(&c3, &s_new).expect("new"), b"13800138000");
    let all = c3
        .search_envelopes(b"13800138000", Format::Text)
        .expect("search");
    assert_eq!(all.len(), 1);
    // And the key is gone from the file itself.
    let text = std::fs::read_to_string(dir.join("keyring.toml")).expect("read");
    assert_eq!(text.matches("wrapped_key").count(), 1, "{text}");
    assert!(matches!(
        kr.destroy(2),
        Err(CryptoError::DestroyActive { version: 2 })
    ));
}

#[test]
fn concurrent_instances_do_not_lose_rotations() {
    let d = tempfile::tempdir().expect("tempdir");
    let master = MasterKey::from_bytes([8; 32]);
    let mut a = Keyring::init(d.path(), &master, None).expect("init");
    let mut b = Keyring::open(d.path(), &master).expect("open");
    assert_eq!(a.rotate().expect("a"), 2);
    // `b` was opened before `a` rotated; it must not overwrite version 2.
    assert_eq!(b.rotate().expect("b"), 3);
    let states: Vec<_> = Keyring::open(d.path(), &master)
        .expect("reopen")
        .versions()
        .map(|v| v.state)
        .collect();
    assert_eq!(
        states,
        vec![
            KeyState::DecryptOnly,
            KeyState::DecryptOnly,
            KeyState::Active
        ]
    );
}

#[test]
fn signing_key_persists_and_verifies() {
    use ring::signature::{UnparsedPublicKey, ED25519};
    let d = tempfile::tempdir().expect("tempdir");
    let master = MasterKey::from_bytes([8; 32]);
    let kr = Keyring::init(d.path(), &master, Some("test")).expect("init");
    let sig = kr.signing_key().sign(b"checkpoint 42");
    let reopened = Keyring::open(d.path(), &master).expect("open");
    assert_eq!(reopened.signing_public_key(), kr.signing_public_key());
    assert_eq!(reopened.signing_public_key().len(), 32);
    UnparsedPublicKey::new(&ED25519, reopened.signing_public_key())
        .verify(b"checkpoint 42", sig.as_ref())
        .expect("verifies");
    assert_eq!(reopened.label(), Some("test"));
}

#[test]
fn swapped_wrapped_keys_are_refused() {
    let d = tempfile::tempdir().expect("tempdir");
    let master = MasterKey::from_bytes([8; 32]);
    Keyring::init(d.path(), &master, None)
        .expect("init")
        .rotate()
        .expect("rotate");
    let good = store::load(d.path()).expect("load");
    // Present version 1's wrapped key as version 2's: the AAD binds the
    // version, so it must not open.
    let mut swapped = good.clone();
    let k1 = swapped.versions[0].wrapped_key.take();
    swapped.versions[0].wrapped_key = swapped.versions[1].wrapped_key.take();
    swapped.versions[1].wrapped_key = k1;
    store::save(d.path(), &swapped).expect("save");
    assert!(matches!(
        Keyring::open(d.path(), &master),
        Err(CryptoError::MasterKeyMismatch { .. })
    ));
    store::save(d.path(), &good).expect("restore");
    assert!(Keyring::open(d.path(), &master).is_ok());
}

#[test]
fn keyring_dir_and_file_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("new");
    Keyring::init(&dir, &MasterKey::from_bytes([8; 32]), None).expect("init");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("keyring.toml")), 0o600);
}

#[test]
fn demo_keyring_opens_with_demo_key() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring");
    let kr = Keyring::open(&dir, &MasterKey::demo()).expect("demo keyring");
    assert!(kr.label().unwrap_or("").contains("DEMO"));
    let c = kr
        .column(COL, LogicalType::Text, Mode::Searchable)
        .expect("column");
    let env = enc(&c, b"demo");
    assert_eq!(dec(&c, &env).expect("dec"), b"demo");
}

/// Regenerates the repository's demo keyring: `cargo test --lib
/// regenerate_demo_keyring -- --ignored`. Only needed if the keyring file
/// format changes; the fixtures do not depend on it.
#[test]
#[ignore = "generator, not a check: rewrites committed fixtures when run by hand"]
fn regenerate_demo_keyring() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyring");
    let _ = std::fs::remove_file(dir.join("keyring.toml"));
    Keyring::init(
        &dir,
        &MasterKey::demo(),
        Some("DEMO keyring for demos and tests only; its master key is public. Never protect real data with it."),
    )
    .expect("init demo keyring");
}
