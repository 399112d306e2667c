//! Date and time parsing and printing, checked against what PostgreSQL
//! accepts and prints.

use super::*;

type Canon = fn(Format, &[u8], &mut Vec<u8>) -> Result<(), Reason>;
type Render = fn(Format, &mut Vec<u8>, usize) -> Result<(), ()>;

fn roundtrip(f: Canon, r: Render, s: &str) -> Result<String, Reason> {
    let mut v = Vec::new();
    f(Format::Text, s.as_bytes(), &mut v)?;
    r(Format::Text, &mut v, 0).map_err(|_| "render")?;
    String::from_utf8(v).map_err(|_| "utf8")
}
fn date(s: &str) -> Result<String, Reason> {
    roundtrip(canon_date, render_date, s)
}
fn time(s: &str) -> Result<String, Reason> {
    roundtrip(canon_time, render_time, s)
}
fn ts(s: &str) -> Result<String, Reason> {
    roundtrip(
        |f, i, o| canon_timestamp(f, i, o, false),
        |f, o, s| render_timestamp(f, o, s, false),
        s,
    )
}
fn tstz(s: &str) -> Result<String, Reason> {
    roundtrip(
        |f, i, o| canon_timestamp(f, i, o, true),
        |f, o, s| render_timestamp(f, o, s, true),
        s,
    )
}

#[test]
fn pg_range_constants() {
    // MIN_TIMESTAMP and END_TIMESTAMP from PostgreSQL's datatype/timestamp.h.
    assert_eq!(min_pg_day() * USECS_PER_DAY, -211_813_488_000_000_000);
    assert_eq!(end_timestamp(), 9_223_371_331_200_000_000);
    assert_eq!(civil_from_days(PG_EPOCH_DAYS), (2000, 1, 1));
    for z in [-3_000_000, -719_468, -1, 0, 1, 59, 10_957, 2_000_000] {
        let (y, m, d) = civil_from_days(z);
        assert_eq!(days_from_civil(y, m, d), z);
    }
}

#[test]
fn dates() {
    assert_eq!(date("2024-02-29").as_deref(), Ok("2024-02-29"));
    assert_eq!(date(" 2024-2-9 ").as_deref(), Ok("2024-02-09"));
    assert_eq!(date("20240131").as_deref(), Ok("2024-01-31"));
    assert_eq!(date("0044-03-15 BC").as_deref(), Ok("0044-03-15 BC"));
    assert_eq!(date("4714-11-24 BC").as_deref(), Ok("4714-11-24 BC"));
    assert_eq!(date("5874897-12-31").as_deref(), Ok("5874897-12-31"));
    assert_eq!(date("epoch").as_deref(), Ok("1970-01-01"));
    assert_eq!(date("Infinity").as_deref(), Ok("infinity"));
    assert_eq!(date("-infinity").as_deref(), Ok("-infinity"));
    for bad in [
        "2023-02-29",
        "2024-13-01",
        "2024-00-10",
        "0000-01-01",
        "4714-11-23 BC",
        "5874898-01-01",
        "2024/01/01",
        "Jan 1 2024",
        "today",
        "",
        "2024-01-01x",
    ] {
        assert!(date(bad).is_err(), "{bad}");
    }
}

#[test]
fn times() {
    assert_eq!(time("04:05:06.789").as_deref(), Ok("04:05:06.789"));
    assert_eq!(time("4:05").as_deref(), Ok("04:05:00"));
    assert_eq!(time("24:00:00").as_deref(), Ok("24:00:00"));
    assert_eq!(time("23:59:59.9999996").as_deref(), Ok("24:00:00"));
    assert_eq!(time("00:00:00.000001").as_deref(), Ok("00:00:00.000001"));
    for bad in ["24:00:01", "12:60", "12:5", "12", "", "12:00:00.", "ab:cd"] {
        assert!(time(bad).is_err(), "{bad}");
    }
}

#[test]
fn timestamps() {
    assert_eq!(
        ts("2024-01-02 03:04:05.5").as_deref(),
        Ok("2024-01-02 03:04:05.5")
    );
    assert_eq!(
        ts("2024-01-02T03:04:05").as_deref(),
        Ok("2024-01-02 03:04:05")
    );
    assert_eq!(ts("2024-01-02").as_deref(), Ok("2024-01-02 00:00:00"));
    assert_eq!(
        ts("2024-01-02 03:04:05+08").as_deref(),
        Ok("2024-01-02 03:04:05")
    );
    assert_eq!(
        ts("0044-03-15 12:00:00 BC").as_deref(),
        Ok("0044-03-15 12:00:00 BC")
    );
    assert_eq!(
        ts("294276-12-31 23:59:59.999999").as_deref(),
        Ok("294276-12-31 23:59:59.999999")
    );
    assert!(ts("294277-01-01 00:00:00").is_err());
    assert_eq!(ts("infinity").as_deref(), Ok("infinity"));
    assert_eq!(
        tstz("2024-01-02 03:04:05+08").as_deref(),
        Ok("2024-01-01 19:04:05+00")
    );
    assert_eq!(
        tstz("2024-01-02T03:04:05.000100Z").as_deref(),
        Ok("2024-01-02 03:04:05.0001+00")
    );
    assert_eq!(
        tstz("2024-01-02 03:04:05-05:30").as_deref(),
        Ok("2024-01-02 08:34:05+00")
    );
    assert_eq!(
        tstz("2024-01-02 03:04:05 UTC").as_deref(),
        Ok("2024-01-02 03:04:05+00")
    );
    assert_eq!(
        tstz("2024-01-02 03:04:05").as_deref(),
        Ok("2024-01-02 03:04:05+00")
    );
    for bad in [
        "2024-01-02 25:00",
        "2024-01-02 03:04:05+16",
        "2024-01-02 x",
        "now",
    ] {
        assert!(tstz(bad).is_err(), "{bad}");
    }
}
