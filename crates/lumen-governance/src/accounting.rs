//! Usage accounting: per API key, per model and per UTC day, how many requests, tokens and
//! errors — what finance asks for ("who used how many tokens of which model last month") and
//! what chargeback multiplies by a price.
//!
//! The pipeline records one [`UsageDelta`] per request into a [`UsageStore`]; the admin API
//! queries [`UsageRow`]s for a day range ([`UsageQuery`]) and renders them as JSON (serde) or
//! CSV ([`to_csv`]), with a cost when a [`PriceTable`] is configured. The store is
//! [`MemoryUsageStore`] on one replica and Redis (`lumen-redis`) when state is shared, so
//! three replicas report one total.
//!
//! Rows are bounded ([`UsageBounds::max_rows`] in memory) and expire after
//! [`UsageBounds::retention_days`], so accounting never grows without limit.

use std::collections::HashMap;
use std::fmt::Write as _;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

mod day;
mod memory;

pub use day::{Day, DayError};
pub use memory::MemoryUsageStore;

/// The longest range one query reads: a year, leap or not. A query is a read of every day in
/// it (one Redis hash per day), so the bound keeps an admin request cheap.
pub const MAX_QUERY_DAYS: i64 = 366;

/// The counters of a row, and the amounts one request adds to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    /// Prompt tokens, cached ones included (the engines' `prompt_tokens`).
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The part of `input_tokens` served from the engine's prefix cache.
    pub cached_tokens: u64,
    pub errors: u64,
}

impl Counts {
    /// Adds `other`, saturating: a counter stuck at `u64::MAX` is wrong, a wrapped one is
    /// silently tiny.
    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(other.cached_tokens);
        self.errors = self.errors.saturating_add(other.errors);
    }

    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// What one request adds, borrowed from the request's own strings so the record path does
/// not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageDelta<'a> {
    /// The API key's name (from the configuration or the admin API, never from the client).
    pub key: &'a str,
    /// The model that served the request.
    pub model: &'a str,
    /// The model the client asked for, when a fallback served another one. Equal to `model`
    /// counts as `None`, so the same traffic never splits into two rows.
    pub requested: Option<&'a str>,
    pub day: Day,
    pub counts: Counts,
}

impl<'a> UsageDelta<'a> {
    /// `requested`, or `None` when it names the serving model.
    pub fn requested(&self) -> Option<&'a str> {
        self.requested.filter(|r| *r != self.model)
    }
}

/// One accounted (day, key, model, requested) with its totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub day: Day,
    pub key: String,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
    /// USD, when the price table names `model` ([`PriceTable::apply`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl UsageRow {
    /// The order both stores return rows in: by day, key, model, then requested (`None`
    /// first), so a report is stable whichever store produced it.
    pub fn sort(rows: &mut [UsageRow]) {
        rows.sort_unstable_by(|a, b| {
            (a.day, &a.key, &a.model, &a.requested).cmp(&(b.day, &b.key, &b.model, &b.requested))
        });
    }
}

/// Why a query range cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("`to` ({to}) is before `from` ({from})")]
    Reversed { from: Day, to: Day },
    #[error("a query spans at most {MAX_QUERY_DAYS} days; {from} to {to} is {days}")]
    TooLong { from: Day, to: Day, days: i64 },
}

/// Which rows to read: a day range (both ends included, at most [`MAX_QUERY_DAYS`]) and
/// optional exact filters. Built checked, so a store can rely on the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    from: Day,
    to: Day,
    key: Option<String>,
    model: Option<String>,
}

impl UsageQuery {
    pub fn new(from: Day, to: Day) -> Result<Self, QueryError> {
        let days = from.days_until(to) + 1;
        if days < 1 {
            return Err(QueryError::Reversed { from, to });
        }
        if days > MAX_QUERY_DAYS {
            return Err(QueryError::TooLong { from, to, days });
        }
        Ok(Self {
            from,
            to,
            key: None,
            model: None,
        })
    }

    /// Only rows of the key named `name`.
    pub fn with_key(mut self, name: impl Into<String>) -> Self {
        self.key = Some(name.into());
        self
    }

    /// Only rows served by `model`. The filter is on the serving model — the one billed —
    /// not on the requested one; a fallback's row shows both.
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    pub fn from(&self) -> Day {
        self.from
    }

    pub fn to(&self) -> Day {
        self.to
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Every day in the range, in order.
    pub fn days(&self) -> impl Iterator<Item = Day> {
        self.from.through(self.to)
    }

    /// Whether a row of `key` served by `model` passes the filters.
    pub fn matches(&self, key: &str, model: &str) -> bool {
        self.key.as_deref().is_none_or(|k| k == key)
            && self.model.as_deref().is_none_or(|m| m == model)
    }
}

/// Where usage is kept: in memory ([`MemoryUsageStore`]) or shared (Redis, `lumen-redis`).
pub trait UsageStore: Send + Sync {
    /// Adds `delta` to its (day, key, model, requested) row, creating it. An all-zero delta
    /// changes nothing; a delta for a day already past the retention is dropped (it would
    /// expire at once). An error means the delta may not be counted (a remote store that timed
    /// out may still apply it): the caller logs it and goes on, the request is not failed.
    fn record<'a>(&'a self, delta: UsageDelta<'a>) -> BoxFuture<'a, Result<(), StoreError>>;

    /// [`UsageStore::record`] for a caller that does not wait for it: `true` when the store
    /// queued the delta to write it by itself (and report its failure itself), so a request
    /// needs no task to record its usage; `false` (the default, and a full queue): nothing was
    /// done, call `record`.
    fn try_queue(&self, _delta: &UsageDelta<'_>) -> bool {
        false
    }

    /// Rows in the query's range that pass its filters, in [`UsageRow::sort`] order, without
    /// cost (see [`PriceTable::apply`]).
    fn query<'a>(
        &'a self,
        query: &'a UsageQuery,
    ) -> BoxFuture<'a, Result<Vec<UsageRow>, StoreError>>;
}

/// How much accounting keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageBounds {
    /// Days kept, today included: a row of day D is gone once today is D + `retention_days`.
    /// Both stores apply it (Redis with `EXPIREAT`).
    pub retention_days: u32,
    /// Most rows the in-memory store holds; when full, the oldest day goes whole (a partial
    /// day would be a wrong report, a missing one is visibly missing). Redis is bounded by the
    /// retention alone.
    pub max_rows: usize,
}

impl Default for UsageBounds {
    /// 400 days (last year's month and this one) and 100,000 rows (about 250 key and model
    /// pairs a day for the whole retention; tens of MB with typical names).
    fn default() -> Self {
        Self {
            retention_days: 400,
            max_rows: 100_000,
        }
    }
}

/// Bounds that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBounds {
    #[error("usage retention_days must be between 1 and {max}, got {got}")]
    Retention { got: u32, max: u32 },
    #[error("usage max_rows must be at least 1")]
    MaxRows,
}

impl UsageBounds {
    /// Ten years: past that, a retention is a typo, and `EXPIREAT` arithmetic stays small.
    pub const MAX_RETENTION_DAYS: u32 = 3_660;

    pub fn validate(&self) -> Result<(), InvalidBounds> {
        if !(1..=Self::MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(InvalidBounds::Retention {
                got: self.retention_days,
                max: Self::MAX_RETENTION_DAYS,
            });
        }
        if self.max_rows == 0 {
            return Err(InvalidBounds::MaxRows);
        }
        Ok(())
    }

    /// The oldest day still kept when it is `today`.
    pub fn oldest_kept(&self, today: Day) -> Day {
        today.saturating_add_days(1 - i64::from(self.retention_days.max(1)))
    }
}

/// A model's price in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// What cached input tokens cost instead, when the provider discounts them; without it
    /// they cost `input_per_million` like the rest of the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<f64>,
}

/// A price that is not a finite, non-negative number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the price of `{model}` must be finite and not negative")]
pub struct InvalidPrice {
    pub model: String,
}

/// Serving model id → price, for chargeback. Models not in it get no cost (not a zero one:
/// "free" and "unpriced" differ on an invoice).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    models: HashMap<String, Price>,
}

impl PriceTable {
    pub fn new(
        prices: impl IntoIterator<Item = (String, Price)>,
    ) -> Result<PriceTable, InvalidPrice> {
        let table = PriceTable {
            models: prices.into_iter().collect(),
        };
        table.validate()?;
        Ok(table)
    }

    /// For a table read with serde.
    pub fn validate(&self) -> Result<(), InvalidPrice> {
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        match self.models.iter().find(|(_, p)| {
            !ok(p.input_per_million)
                || !ok(p.output_per_million)
                || !p.cached_input_per_million.is_none_or(ok)
        }) {
            Some((model, _)) => Err(InvalidPrice {
                model: model.clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn get(&self, model: &str) -> Option<&Price> {
        self.models.get(model)
    }

    /// The USD cost of `counts` on `model`, rounded to a millionth of a dollar (so sums and
    /// CSV show no float noise), or `None` when the model has no price.
    pub fn cost(&self, model: &str, counts: &Counts) -> Option<f64> {
        let p = self.models.get(model)?;
        let (cached, cached_price) = match p.cached_input_per_million {
            Some(c) => (counts.cached_tokens.min(counts.input_tokens), c),
            None => (0, 0.0),
        };
        let usd = ((counts.input_tokens - cached) as f64 * p.input_per_million
            + cached as f64 * cached_price
            + counts.output_tokens as f64 * p.output_per_million)
            / 1e6;
        Some((usd * 1e6).round() / 1e6)
    }

    /// Sets each row's `cost` from its serving model's price.
    pub fn apply(&self, rows: &mut [UsageRow]) {
        for row in rows {
            row.cost = self.cost(&row.model, &row.counts);
        }
    }
}

/// Rows as CSV (RFC 4180: CRLF line ends, a header line, fields holding a comma, quote, CR or
/// LF quoted with quotes doubled). The columns are fixed so a spreadsheet import keeps
/// working: `day,key,model,requested,requests,input_tokens,output_tokens,cached_tokens,errors`
/// and, with `with_cost`, `cost` (USD, six decimals; empty for an unpriced model).
pub fn to_csv(rows: &[UsageRow], with_cost: bool) -> String {
    let mut out = String::with_capacity(96 * (rows.len() + 1));
    out.push_str(
        "day,key,model,requested,requests,input_tokens,output_tokens,cached_tokens,errors",
    );
    out.push_str(if with_cost { ",cost\r\n" } else { "\r\n" });
    for r in rows {
        // Writing to a String cannot fail.
        let _ = write!(out, "{},", r.day);
        csv_field(&mut out, &r.key);
        out.push(',');
        csv_field(&mut out, &r.model);
        out.push(',');
        csv_field(&mut out, r.requested.as_deref().unwrap_or(""));
        let c = &r.counts;
        let _ = write!(
            out,
            ",{},{},{},{},{}",
            c.requests, c.input_tokens, c.output_tokens, c.cached_tokens, c.errors
        );
        if with_cost {
            out.push(',');
            if let Some(cost) = r.cost {
                let _ = write!(out, "{cost:.6}");
            }
        }
        out.push_str("\r\n");
    }
    out
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\r', '\n']) {
        out.push('"');
        for ch in s.chars() {
            if ch == '"' {
                out.push('"');
            }
            out.push(ch);
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

#[cfg(test)]
mod tests;
