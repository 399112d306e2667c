//! Value-level tests: canonicalization and rendering of every type, with
//! expected outputs taken from what PostgreSQL prints and sends.

use super::*;

fn canon(ty: LogicalType, f: Format, input: &[u8]) -> Result<Vec<u8>, Reason> {
    let mut v = Vec::new();
    canonicalize(ty, f, input, &mut v)?;
    Ok(v)
}

fn render(ty: LogicalType, f: Format, canonical: &[u8]) -> Vec<u8> {
    let prefix = render_prefix(ty, f);
    let mut v = vec![0xEE; 3]; // pre-existing content must survive
    v.resize(3 + prefix, 0);
    v.extend_from_slice(canonical);
    render_in_place(ty, f, &mut v, 3).expect("render");
    assert_eq!(&v[..3], &[0xEE; 3]);
    v.split_off(3)
}

/// Text in → text out.
fn tt(ty: LogicalType, input: &str) -> String {
    let c =
        canon(ty, Format::Text, input.as_bytes()).unwrap_or_else(|e| panic!("{ty} {input:?}: {e}"));
    String::from_utf8(render(ty, Format::Text, &c)).expect("utf8")
}

/// Text in → binary out.
fn tb(ty: LogicalType, input: &str) -> Vec<u8> {
    let c = canon(ty, Format::Text, input.as_bytes()).expect("canon");
    render(ty, Format::Binary, &c)
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

use LogicalType as T;

#[test]
fn integers() {
    assert_eq!(tt(T::Int4, "042"), "42");
    assert_eq!(tt(T::Int2, "-32768"), "-32768");
    assert_eq!(tt(T::Int8, " 9223372036854775807 "), "9223372036854775807");
    assert_eq!(tb(T::Int4, "-2"), vec![0xff, 0xff, 0xff, 0xfe]);
    assert_eq!(tb(T::Int2, "258"), vec![1, 2]);
    assert_eq!(
        canon(T::Int4, Format::Text, b"042"),
        canon(T::Int4, Format::Binary, &42i32.to_be_bytes())
    );
    assert!(canon(T::Int2, Format::Text, b"32768").is_err());
    assert!(canon(T::Int4, Format::Binary, &[0, 0, 1]).is_err());
}

#[test]
fn booleans() {
    assert_eq!(tt(T::Bool, "yes"), "t");
    assert_eq!(tt(T::Bool, "OFF"), "f");
    assert_eq!(tb(T::Bool, "true"), vec![1]);
    assert_eq!(canon(T::Bool, Format::Binary, &[7]).ok(), Some(vec![1]));
}

#[test]
fn uuids() {
    let u = "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11";
    assert_eq!(tt(T::Uuid, u), u.to_ascii_lowercase());
    assert_eq!(tb(T::Uuid, u), hex("a0eebc999c0b4ef8bb6d6bb9bd380a11"));
}

#[test]
fn numerics_text() {
    let cases = [
        ("042.50", "42.50"),
        ("0", "0"),
        ("-0.00", "0.00"),
        ("+.5", "0.5"),
        ("5.", "5"),
        ("1.5e2", "150"),
        ("1.50e1", "15.0"),
        ("150e-1", "15.0"),
        ("1e-3", "0.001"),
        ("-12345678901234567890.123", "-12345678901234567890.123"),
        ("0000", "0"),
        ("00.0100", "0.0100"),
        ("nan", "NaN"),
        ("-Infinity", "-Infinity"),
        ("inf", "Infinity"),
    ];
    for (i, o) in cases {
        assert_eq!(tt(T::Numeric, i), o, "{i}");
    }
    for bad in ["", ".", "-", "1e", "1.2.3", "abc", "1e1001", "1 2", "0x10"] {
        assert!(
            canon(T::Numeric, Format::Text, bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn numerics_binary() {
    let cases = [
        ("42.50", "0002 0000 0000 0002 002a 1388"),
        ("0", "0000 0000 0000 0000"),
        ("0.00", "0000 0000 0000 0002"),
        ("-0.001", "0001 ffff 4000 0003 000a"),
        ("10000", "0001 0001 0000 0000 0001"),
        ("123456.7", "0003 0001 0000 0001 000c 0d80 1b58"),
        ("NaN", "0000 0000 c000 0000"),
        ("Infinity", "0000 0000 d000 0020"),
        ("-Infinity", "0000 0000 f000 0020"),
    ];
    for (text, bin) in cases {
        let want = hex(bin);
        assert_eq!(tb(T::Numeric, text), want, "{text}");
        // And binary input gives back the same canonical text.
        let c = canon(T::Numeric, Format::Binary, &want).expect("binary numeric");
        assert_eq!(String::from_utf8(c).ok().as_deref(), Some(text), "{text}");
    }
    // Unnormalized binary input (leading zero group, digits past dscale).
    let c = canon(
        T::Numeric,
        Format::Binary,
        &hex("0003 0001 4000 0001 0000 0005 1388"),
    );
    assert_eq!(c.ok(), Some(b"-5.5".to_vec()));
    let c = canon(T::Numeric, Format::Binary, &hex("0001 ffff 4000 0002 0001"));
    assert_eq!(c.ok(), Some(b"0.00".to_vec()));
    for bad in [
        "",
        "0001 0000 0000 0000",
        "0001 0000 0000 0000 2710",
        "0000 0000 1234 0000",
    ] {
        assert!(
            canon(T::Numeric, Format::Binary, &hex(bad)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn text_types() {
    assert_eq!(tt(T::Text, "héllo "), "héllo ");
    assert_eq!(tt(T::Char, "ab  "), "ab");
    assert_eq!(tb(T::Varchar, "x"), b"x".to_vec());
    assert!(canon(T::Text, Format::Text, b"a\0b").is_err());
    assert!(canon(T::Text, Format::Binary, &[0xff, 0xfe]).is_err());
    assert_eq!(tt(T::Json, "{ \"a\" : 1 }"), "{ \"a\" : 1 }");
    assert!(canon(T::Json, Format::Text, b"{a:1}").is_err());
    assert_eq!(tb(T::Jsonb, "[1]"), b"\x01[1]".to_vec());
    assert_eq!(
        canon(T::Jsonb, Format::Binary, b"\x01[1]").ok(),
        Some(b"[1]".to_vec())
    );
    assert!(canon(T::Jsonb, Format::Binary, b"\x02[1]").is_err());
}

#[test]
fn bytea() {
    assert_eq!(tt(T::Bytea, "\\x0A ff"), "\\x0aff");
    assert_eq!(tt(T::Bytea, "a\\\\b\\001"), "\\x615c6201");
    assert_eq!(tt(T::Bytea, ""), "\\x");
    assert_eq!(tb(T::Bytea, "\\xdeadbeef"), hex("deadbeef"));
    for bad in ["\\x0", "\\xzz", "a\\b", "\\400"] {
        assert!(
            canon(T::Bytea, Format::Text, bad.as_bytes()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn datetimes_binary() {
    assert_eq!(tb(T::Date, "2000-01-02"), 1i32.to_be_bytes().to_vec());
    assert_eq!(tb(T::Date, "1999-12-31"), (-1i32).to_be_bytes().to_vec());
    assert_eq!(
        tb(T::Time, "00:00:01.5"),
        1_500_000i64.to_be_bytes().to_vec()
    );
    assert_eq!(
        tb(T::Timestamp, "2000-01-01 00:00:01"),
        1_000_000i64.to_be_bytes().to_vec()
    );
    assert_eq!(
        tb(T::Timestamptz, "2000-01-01 01:00:00+01"),
        0i64.to_be_bytes().to_vec()
    );
}

#[test]
fn render_rejects_wrong_canonical_length() {
    for ty in [T::Int4, T::Uuid, T::Date, T::Bool, T::Float8] {
        let mut v = vec![1, 2, 3];
        assert!(
            render_in_place(ty, Format::Text, &mut v, 0).is_err(),
            "{ty}"
        );
    }
}
