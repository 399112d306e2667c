//! Parsing, type fit, and `apply` over every mask, with property tests.

use super::*;

#[test]
fn parses_every_form() {
    assert_eq!(MaskSpec::parse("phone"), Ok(MaskSpec::Phone));
    assert_eq!(
        MaskSpec::parse("partial(2, 1, '*')"),
        Ok(MaskSpec::Partial {
            first: 2,
            last: 1,
            fill: "*".into()
        })
    );
    assert_eq!(
        MaskSpec::parse("fixed('***')"),
        Ok(MaskSpec::Fixed("***".into()))
    );
    assert_eq!(
        MaskSpec::parse("fixed('a,b')"),
        Ok(MaskSpec::Fixed("a,b".into()))
    );
    assert!(MaskSpec::parse("phon")
        .unwrap_err()
        .contains("unknown mask"));
    assert!(MaskSpec::parse("partial(1, 2)").is_err());
    assert!(MaskSpec::parse("partial(x, 2, '*')").is_err());
    assert!(MaskSpec::parse("fixed(***)").is_err());
}

#[test]
fn type_fit() {
    assert!(MaskSpec::Phone.fits(LogicalType::Text));
    assert!(!MaskSpec::Phone.fits(LogicalType::Int8));
    assert!(MaskSpec::Year.fits(LogicalType::Date));
    assert!(!MaskSpec::Year.fits(LogicalType::Text));
    assert!(MaskSpec::Null.fits(LogicalType::Int4));
}

// ---- apply ------------------------------------------------------------------

fn key() -> PseudonymKey {
    PseudonymKey::new(b"test column key")
}

/// Applies `spec` after some existing buffer content, checks that the mask
/// only appended, and returns what it appended (None for NULL).
fn apply(spec: &MaskSpec, value: &str) -> Result<Option<String>, MaskError> {
    let key = key();
    let mut out = String::from("earlier|");
    let result = spec.apply(value, Some(&key), &mut out);
    let added = out
        .strip_prefix("earlier|")
        .expect("apply only appends")
        .to_owned();
    match result {
        Ok(true) => Ok(Some(added)),
        Ok(false) | Err(_) => {
            assert_eq!(added, "", "nothing appended for NULL or on error");
            result.map(|_| None)
        }
    }
}

fn masked(spec: &str, value: &str) -> String {
    let spec = MaskSpec::parse(spec).unwrap();
    apply(&spec, value).unwrap().expect("not NULL")
}

#[test]
fn examples_from_the_issue() {
    assert_eq!(masked("phone", "13812345678"), "138****5678");
    assert_eq!(
        masked("email", "zhang.san@example.com"),
        "z********@example.com"
    );
    assert_eq!(masked("cn_id", "11010519491231002X"), "110105********002X");
    assert_eq!(
        masked("bank_card", "6222021234567890123"),
        "622202*********0123"
    );
    assert_eq!(masked("name", "张三丰"), "张**");
    assert_eq!(masked("name", "Alice Smith"), "A**** S****");
    assert_eq!(
        masked("address", "北京市朝阳区建国路88号"),
        "北京市朝阳区******"
    );
    assert_eq!(masked("year", "1990-05-17"), "1990-01-01");
    assert_eq!(masked("fixed('***')", "anything"), "***");
    assert_eq!(masked("partial(1, 2, '#')", "abcdef"), "a###ef");
    assert_eq!(apply(&MaskSpec::Null, "13812345678"), Ok(None));
}

#[test]
fn empty_values() {
    for spec in [
        "phone",
        "email",
        "cn_id",
        "bank_card",
        "name",
        "address",
        "pseudonym",
        "partial(1, 1, '*')",
    ] {
        assert_eq!(masked(spec, ""), "", "{spec}");
    }
    assert_eq!(masked("fixed('***')", ""), "***");
    assert_eq!(masked("fixed('')", "x"), "");
    assert_eq!(apply(&MaskSpec::Null, ""), Ok(None));
    assert_eq!(apply(&MaskSpec::Year, ""), Err(MaskError::NotADate));
}

#[test]
fn pseudonym_needs_a_key() {
    let mut out = String::from("kept");
    assert_eq!(
        MaskSpec::Pseudonym.apply("13812345678", None, &mut out),
        Err(MaskError::MissingPseudonymKey)
    );
    // Even for an empty value: a missing key is a fault of the caller.
    assert_eq!(
        MaskSpec::Pseudonym.apply("", None, &mut out),
        Err(MaskError::MissingPseudonymKey)
    );
    assert_eq!(out, "kept");
    // Other masks do not need one.
    assert_eq!(
        MaskSpec::Phone.apply("13812345678", None, &mut out),
        Ok(true)
    );
}

#[test]
fn pseudonym_is_stable() {
    let a = masked("pseudonym", "张三丰");
    assert_eq!(a, masked("pseudonym", "张三丰"));
    assert_ne!(a, masked("pseudonym", "张三"));
    assert!(a.starts_with("pn_") && a.len() == 19);
}

#[test]
fn year_errors_leave_the_buffer_alone() {
    let mut out = String::from("kept");
    assert_eq!(
        MaskSpec::Year.apply("1990-05-17 25:00:00", None, &mut out),
        Err(MaskError::NotADate)
    );
    assert_eq!(out, "kept");
    assert_eq!(
        MaskSpec::Year.apply("0044-03-15 BC", None, &mut out),
        Ok(true)
    );
    assert_eq!(out, "kept0044-01-01 BC");
}

#[test]
fn error_messages_never_carry_the_value() {
    let secret = "110105194912310021";
    for err in [
        MaskSpec::Year.apply(secret, None, &mut String::new()),
        MaskSpec::Pseudonym.apply(secret, None, &mut String::new()),
    ] {
        let err = err.unwrap_err();
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
    }
}

#[test]
fn short_and_multibyte_values() {
    // 1–3 characters: never shown whole.
    for spec in ["phone", "cn_id", "bank_card", "name", "address", "email"] {
        for value in ["1", "12", "123", "张", "张三", "张三丰", "😀", "😀😁🎉"] {
            let out = masked(spec, value);
            assert_ne!(out, value, "{spec} shows {value:?} whole");
            assert_eq!(out.chars().count(), value.chars().count(), "{spec}");
        }
    }
    assert_eq!(masked("partial(1, 1, '*')", "张三丰"), "张*丰");
    assert_eq!(masked("partial(2, 2, '*')", "张三丰"), "***");
    assert_eq!(
        masked("address", "上海市黄浦区南京东路1号"),
        "上海市黄浦区******"
    );
    assert_eq!(masked("name", "欧阳 娜娜"), "欧* 娜*");
    assert_eq!(masked("email", "😀😁@例子.中国"), "😀*@例子.中国");
}

// ---- properties -------------------------------------------------------------

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Masks that keep the character count (with a one-character fill).
    fn length_keeping() -> impl Strategy<Value = MaskSpec> {
        prop_oneof![
            (
                0usize..6,
                0usize..6,
                prop_oneof![Just("*"), Just("#"), Just("•")]
            )
                .prop_map(|(first, last, fill)| MaskSpec::Partial {
                    first,
                    last,
                    fill: fill.into()
                }),
            Just(MaskSpec::Phone),
            Just(MaskSpec::Email),
            Just(MaskSpec::CnId),
            Just(MaskSpec::BankCard),
            Just(MaskSpec::Name),
            Just(MaskSpec::Address),
        ]
    }

    fn any_mask() -> impl Strategy<Value = MaskSpec> {
        prop_oneof![
            4 => length_keeping(),
            1 => Just(MaskSpec::Pseudonym),
            1 => Just(MaskSpec::Year),
            1 => Just(MaskSpec::Null),
            1 => ".{0,8}".prop_map(MaskSpec::Fixed),
            1 => (0usize..4, 0usize..4, ".{0,3}").prop_map(|(first, last, fill)| {
                MaskSpec::Partial { first, last, fill }
            }),
        ]
    }

    /// Arbitrary Unicode, number-like text heavy in separators, and
    /// date-like text.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "\\PC{0,40}",
            "[0-9 +().\\-]{0,30}",
            "[0-9]{1,6}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?([+-][0-9]{2}(:[0-9]{2})?)?)?( BC)?",
        ]
    }

    /// Characters that a mask may keep even when they are all there is.
    fn formatting_only(spec: &MaskSpec, v: &str) -> bool {
        v.is_empty()
            || match spec {
                MaskSpec::Email => v.rfind('@') == Some(0),
                MaskSpec::Partial { fill, .. } => fill.is_empty(),
                _ => v.chars().all(|c| c.is_whitespace() || " -+().".contains(c)),
            }
    }

    proptest! {
        #[test]
        fn every_mask_is_total(spec in any_mask(), v in value()) {
            let key = key();
            let mut out = String::from("earlier|");
            match spec.apply(&v, Some(&key), &mut out) {
                Ok(true) => prop_assert!(out.starts_with("earlier|")),
                Ok(false) => {
                    prop_assert_eq!(&spec, &MaskSpec::Null);
                    prop_assert_eq!(out.as_str(), "earlier|");
                }
                Err(e) => {
                    prop_assert_eq!(&spec, &MaskSpec::Year);
                    prop_assert_eq!(e, MaskError::NotADate);
                    prop_assert_eq!(out.as_str(), "earlier|");
                }
            }
        }

        #[test]
        fn character_masks_keep_length_and_hide_something(
            spec in length_keeping(),
            v in value(),
        ) {
            let out = apply(&spec, &v).unwrap().unwrap();
            prop_assert_eq!(out.chars().count(), v.chars().count());
            if !v.contains('*') && !formatting_only(&spec, &v) {
                prop_assert_ne!(&out, &v);
            }
        }

        #[test]
        fn number_masks_never_show_a_run_of_eight(
            spec in prop_oneof![
                Just(MaskSpec::Phone),
                Just(MaskSpec::CnId),
                Just(MaskSpec::BankCard),
            ],
            v in prop_oneof!["[^*]{11,40}", "[0-9 +().\\-]{11,40}", "[0-9X]{11,20}"],
        ) {
            let out: Vec<char> = apply(&spec, &v).unwrap().unwrap().chars().collect();
            for window in out.windows(chars::MAX_RUN + 1) {
                let window: String = window.iter().collect();
                prop_assert!(!v.contains(&window), "{:?} shows {:?}", spec, window);
            }
        }

        #[test]
        fn pseudonym_tokens_have_one_shape(v in ".+") {
            let out = apply(&MaskSpec::Pseudonym, &v).unwrap().unwrap();
            prop_assert_eq!(out.len(), 19);
            prop_assert!(out.starts_with("pn_"));
            prop_assert!(out[3..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }

        #[test]
        fn year_keeps_year_time_shape_offset_and_era(
            year in "[0-9]{4,6}",
            month in 1u8..=12,
            day in 1u8..=31,
            time in proptest::option::of((0u8..24, 0u8..60, 0u8..60, "(\\.[0-9]{1,6})?", "([+-][0-9]{2}(:[0-5][0-9]){0,2})?")),
            bc in any::<bool>(),
        ) {
            let era = if bc { " BC" } else { "" };
            let (v, want) = match &time {
                None => (
                    format!("{year}-{month:02}-{day:02}{era}"),
                    format!("{year}-01-01{era}"),
                ),
                Some((h, m, s, frac, tz)) => (
                    format!("{year}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}{frac}{tz}{era}"),
                    format!("{year}-01-01 00:00:00{tz}{era}"),
                ),
            };
            prop_assert_eq!(apply(&MaskSpec::Year, &v).unwrap().unwrap(), want);
        }
    }
}
