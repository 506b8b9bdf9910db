use super::*;

fn day(s: &str) -> Day {
    s.parse().unwrap()
}

fn counts(requests: u64, input: u64, output: u64, cached: u64, errors: u64) -> Counts {
    Counts {
        requests,
        input_tokens: input,
        output_tokens: output,
        cached_tokens: cached,
        errors,
    }
}

fn row(key: &str, model: &str, requested: Option<&str>, c: Counts) -> UsageRow {
    UsageRow {
        day: day("2025-03-01"),
        key: key.into(),
        model: model.into(),
        requested: requested.map(Into::into),
        counts: c,
        cost: None,
    }
}

#[test]
fn csv_quotes_only_what_rfc_4180_requires() {
    let rows = [
        row(
            "ops@team.example:eu-1",
            "meta-llama/Llama-3.1-8B",
            None,
            counts(3, 30, 9, 4, 1),
        ),
        row(
            "a,b",
            "m\"x\"",
            Some("line\r\nbreak"),
            counts(1, 2, 3, 0, 0),
        ),
    ];
    let csv = to_csv(&rows, false);
    assert_eq!(
        csv,
        "day,key,model,requested,requests,input_tokens,output_tokens,cached_tokens,errors\r\n\
         2025-03-01,ops@team.example:eu-1,meta-llama/Llama-3.1-8B,,3,30,9,4,1\r\n\
         2025-03-01,\"a,b\",\"m\"\"x\"\"\",\"line\r\nbreak\",1,2,3,0,0\r\n"
    );
}

/// A minimal RFC 4180 reader: the quoting must read back to exactly the original fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && record.is_empty(),
        "ends with CRLF"
    );
    records
}

#[test]
fn csv_round_trips_hostile_names() {
    let names = [
        "plain",
        "a:b",
        "x|y",
        "-dash@at.dot:colon",
        "comma,inside",
        "\"quoted\"",
        "new\nline",
        "cr\ronly",
        "ünïcødé/模型",
        "",
    ];
    let rows: Vec<UsageRow> = names
        .iter()
        .map(|n| {
            row(
                n,
                n,
                Some(*n).filter(|n| !n.is_empty()),
                counts(1, 1, 1, 1, 1),
            )
        })
        .collect();
    let parsed = parse_csv(&to_csv(&rows, true));
    assert_eq!(parsed.len(), rows.len() + 1);
    assert_eq!(parsed[0].len(), 10);
    assert_eq!(parsed[0][9], "cost");
    for (r, p) in rows.iter().zip(&parsed[1..]) {
        assert_eq!(p.len(), 10, "{p:?}");
        assert_eq!(p[1], r.key);
        assert_eq!(p[2], r.model);
        assert_eq!(p[3], r.requested.clone().unwrap_or_default());
        assert_eq!(p[9], "", "no price: an empty cost, not 0");
    }
}

#[test]
fn cost_is_per_million_tokens_rounded_to_micro_dollars() {
    let prices = PriceTable::new([
        (
            "big".to_string(),
            Price {
                input_per_million: 3.0,
                output_per_million: 15.0,
                cached_input_per_million: None,
            },
        ),
        (
            "cached".to_string(),
            Price {
                input_per_million: 1.0,
                output_per_million: 2.0,
                cached_input_per_million: Some(0.1),
            },
        ),
    ])
    .unwrap();
    let c = counts(10, 1_000_000, 200_000, 400_000, 0);
    // 1M × $3 + 0.2M × $15: cached tokens pay full price without a cached rate.
    assert_eq!(prices.cost("big", &c), Some(6.0));
    // 0.6M × $1 + 0.4M × $0.1 + 0.2M × $2.
    assert_eq!(prices.cost("cached", &c), Some(1.04));
    assert_eq!(prices.cost("unpriced", &c), None);
    // One token of $0.1/M: $0.0000001, below a micro-dollar.
    assert_eq!(prices.cost("cached", &counts(1, 1, 0, 1, 0)), Some(0.0));
    assert_eq!(prices.cost("big", &counts(1, 1, 0, 0, 0)), Some(0.000003));
    // More cached than input (an engine's odd report) cannot go negative.
    assert_eq!(
        prices.cost("cached", &counts(1, 10, 0, 50, 0)),
        Some(0.000001)
    );

    let mut rows = vec![
        row("k", "big", None, counts(1, 123_456, 7_890, 0, 0)),
        row("k", "unpriced", None, c),
    ];
    prices.apply(&mut rows);
    assert_eq!(rows[0].cost, Some(0.488718));
    assert_eq!(rows[1].cost, None);
    let csv = to_csv(&rows, true);
    assert!(csv.contains(",0.488718\r\n"), "{csv}");
    assert!(
        csv.ends_with(",0,\r\n"),
        "an unpriced row's cost cell is empty: {csv}"
    );
}

#[test]
fn prices_must_be_finite_and_not_negative() {
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let p = Price {
            input_per_million: 1.0,
            output_per_million: 1.0,
            cached_input_per_million: Some(bad),
        };
        assert_eq!(
            PriceTable::new([("m".to_string(), p)]),
            Err(InvalidPrice { model: "m".into() })
        );
    }
    let table: PriceTable = serde_json::from_str(
        r#"{"org/model": {"input_per_million": 0.5, "output_per_million": 1.5}}"#,
    )
    .unwrap();
    assert!(table.validate().is_ok());
    assert_eq!(
        table.get("org/model").map(|p| p.output_per_million),
        Some(1.5)
    );
    assert!(
        serde_json::from_str::<PriceTable>(r#"{"m": {"input_per_million": 1, "output": 1}}"#)
            .is_err(),
        "a misspelt field is an error, not a free model"
    );
}

#[test]
fn rows_serialize_flat_with_cost_only_when_priced() {
    let mut r = row("k", "m", None, counts(1, 2, 3, 4, 5));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"day": "2025-03-01", "key": "k", "model": "m", "requests": 1,
            "input_tokens": 2, "output_tokens": 3, "cached_tokens": 4, "errors": 5})
    );
    r.requested = Some("asked".into());
    r.cost = Some(0.25);
    let json = serde_json::to_string(&r).unwrap();
    assert_eq!(serde_json::from_str::<UsageRow>(&json).unwrap(), r);
}

#[test]
fn a_query_range_is_ordered_and_at_most_a_year() {
    let q = UsageQuery::new(day("2024-01-01"), day("2024-12-31")).unwrap();
    assert_eq!(q.days().count(), 366);
    assert_eq!(
        UsageQuery::new(day("2024-01-01"), day("2025-01-01")),
        Err(QueryError::TooLong {
            from: day("2024-01-01"),
            to: day("2025-01-01"),
            days: 367
        })
    );
    assert_eq!(
        UsageQuery::new(day("2024-01-02"), day("2024-01-01")),
        Err(QueryError::Reversed {
            from: day("2024-01-02"),
            to: day("2024-01-01")
        })
    );
    let one = UsageQuery::new(day("2024-01-01"), day("2024-01-01")).unwrap();
    assert_eq!(one.days().collect::<Vec<_>>(), [day("2024-01-01")]);
    let q = one.with_key("k").with_model("m");
    assert!(q.matches("k", "m"));
    assert!(!q.matches("k", "n"));
    assert!(!q.matches("K", "m"), "exact, case-sensitive");
}

#[test]
fn counts_saturate_and_a_requested_model_equal_to_the_served_one_is_none() {
    let mut c = counts(u64::MAX - 1, 1, 0, 0, 0);
    c.add(&counts(5, 1, 0, 0, 0));
    assert_eq!(c, counts(u64::MAX, 2, 0, 0, 0));
    let d = UsageDelta {
        key: "k",
        model: "m",
        requested: Some("m"),
        day: day("2025-01-01"),
        counts: c,
    };
    assert_eq!(d.requested(), None);
    assert_eq!(
        UsageDelta {
            requested: Some("n"),
            ..d
        }
        .requested(),
        Some("n")
    );
}

#[test]
fn bounds_are_validated() {
    assert!(UsageBounds::default().validate().is_ok());
    let b = |retention_days, max_rows| UsageBounds {
        retention_days,
        max_rows,
    };
    assert!(matches!(
        b(0, 1).validate(),
        Err(InvalidBounds::Retention { .. })
    ));
    assert!(matches!(
        b(5_000, 1).validate(),
        Err(InvalidBounds::Retention { .. })
    ));
    assert_eq!(b(1, 0).validate(), Err(InvalidBounds::MaxRows));
    assert_eq!(b(1, 1).oldest_kept(day("2025-03-01")), day("2025-03-01"));
    assert_eq!(b(30, 1).oldest_kept(day("2025-03-01")), day("2025-01-31"));
}
