use super::*;

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

#[test]
fn the_epoch_and_known_timestamps_fall_on_their_utc_day() {
    assert_eq!(Day::from_unix_ms(0), Day::EPOCH);
    assert_eq!(Day::EPOCH.to_string(), "1970-01-01");
    // 2024-02-29T23:59:59.999Z and the next millisecond.
    assert_eq!(
        Day::from_unix_ms(1_709_251_199_999).to_string(),
        "2024-02-29"
    );
    assert_eq!(
        Day::from_unix_ms(1_709_251_200_000).to_string(),
        "2024-03-01"
    );
    // 2000-01-01T00:00:00Z.
    assert_eq!(Day::from_unix_ms(946_684_800_000).to_string(), "2000-01-01");
    assert_eq!(Day::from_unix_ms(u64::MAX), Day::MAX);
}

#[test]
fn the_range_ends_are_the_four_digit_years() {
    assert_eq!(Day::MIN.to_string(), "0000-01-01");
    assert_eq!(Day::MAX.to_string(), "9999-12-31");
    assert_eq!(Day::from_ymd(0, 1, 1), Ok(Day::MIN));
    assert_eq!(Day::from_ymd(9999, 12, 31), Ok(Day::MAX));
    assert_eq!(Day::MAX.saturating_add_days(1), Day::MAX);
    assert_eq!(Day::MIN.saturating_add_days(-1), Day::MIN);
    assert_eq!(Day::from_days_since_epoch(i64::from(Day::MAX.0) + 1), None);
}

#[test]
fn leap_years_follow_the_gregorian_rules() {
    for (y, leap) in [
        (2024, true),
        (2023, false),
        (2000, true),
        (1900, false),
        (2100, false),
    ] {
        assert_eq!(Day::from_ymd(y, 2, 29).is_ok(), leap, "{y}");
        let feb28 = Day::from_ymd(y, 2, 28).unwrap();
        let next = feb28.saturating_add_days(1).to_string();
        let want = if leap {
            format!("{y:04}-02-29")
        } else {
            format!("{y:04}-03-01")
        };
        assert_eq!(next, want);
    }
    assert_eq!(
        day("2024-12-31").days_since_epoch() - day("2024-01-01").days_since_epoch(),
        365
    );
}

#[test]
fn month_ends_roll_over_to_the_first() {
    for (end, next) in [
        ("2025-01-31", "2025-02-01"),
        ("2025-04-30", "2025-05-01"),
        ("2025-06-30", "2025-07-01"),
        ("2025-09-30", "2025-10-01"),
        ("2025-11-30", "2025-12-01"),
        ("2025-12-31", "2026-01-01"),
    ] {
        assert_eq!(day(end).saturating_add_days(1), day(next));
        assert_eq!(day(next).saturating_add_days(-1), day(end));
    }
    assert_eq!(
        Day::from_ymd(2025, 4, 31),
        Err(DayError::DayOfMonth {
            year: 2025,
            month: 4,
            day: 31
        })
    );
}

/// Every day for 800 years round-trips through text and (y, m, d), in order, one apart.
#[test]
fn every_day_round_trips_through_its_text() {
    let mut prev: Option<Day> = None;
    for d in day("1800-01-01").through(day("2600-12-31")) {
        let text = d.to_string();
        assert_eq!(day(&text), d, "{text}");
        let (y, m, dd) = d.ymd();
        assert_eq!(Day::from_ymd(y, m, dd), Ok(d));
        if let Some(p) = prev {
            assert_eq!(p.days_until(d), 1);
            assert!(p.to_string() < text, "text sorts like the day");
        }
        prev = Some(d);
    }
}

#[test]
fn malformed_text_is_a_typed_error() {
    for bad in [
        "",
        "2025-1-01",
        "2025/01/01",
        "20250101",
        "2025-01-01T00:00:00Z",
        " 2025-01-01",
        "2025-0a-01",
        "+025-01-01",
        "２０２５-01-01",
    ] {
        assert!(
            matches!(bad.parse::<Day>(), Err(DayError::Format(_))),
            "{bad:?}"
        );
    }
    assert_eq!("2025-13-01".parse::<Day>(), Err(DayError::Month(13)));
    assert_eq!("2025-00-01".parse::<Day>(), Err(DayError::Month(0)));
    assert!(matches!(
        "2025-02-29".parse::<Day>(),
        Err(DayError::DayOfMonth { day: 29, .. })
    ));
    assert!(matches!(
        "2025-01-00".parse::<Day>(),
        Err(DayError::DayOfMonth { day: 0, .. })
    ));
    assert_eq!(Day::from_ymd(10_000, 1, 1), Err(DayError::Year(10_000)));
    let long = "x".repeat(10_000);
    let Err(DayError::Format(shown)) = long.parse::<Day>() else {
        panic!("not a format error")
    };
    assert_eq!(shown.len(), 32, "the echo of a query string is cut");
}

#[test]
fn serde_uses_the_text_form() {
    let d = day("2025-03-09");
    assert_eq!(serde_json::to_string(&d).unwrap(), r#""2025-03-09""#);
    assert_eq!(serde_json::from_str::<Day>(r#""2025-03-09""#).unwrap(), d);
    assert!(serde_json::from_str::<Day>(r#""2025-02-30""#).is_err());
}
