//! OpenTelemetry trace export settings, from the standard `OTEL_*` environment variables (the
//! same names every other service reads, so a platform's collector settings apply unchanged).
//!
//! They are separate from `LUMEN_*`: read once at start (a reload does not change them), and,
//! as the OpenTelemetry specification asks, a value Lumen cannot use is reported as a warning
//! and replaced by the default rather than stopping the process.

use std::fmt;
use std::time::Duration;

use super::Secret;

/// What `OTEL_*` asks for. `endpoint: None` means no export (the default: setting
/// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is what turns it on).
#[derive(Clone)]
pub struct OtelConfig {
    /// Full OTLP/HTTP traces URL (`.../v1/traces`), or `None`: export off.
    pub endpoint: Option<String>,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`), often a collector's API key.
    pub headers: Vec<(String, Secret)>,
    /// Per export request.
    pub timeout: Duration,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, without `service.name` (that is [`service_name`](Self::service_name)).
    pub resource: Vec<(String, String)>,
    pub sampler: Sampler,
    /// Spans waiting for export; beyond it new spans are dropped and counted.
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    /// Longest a span waits for its batch to fill before it is sent.
    pub schedule_delay: Duration,
    /// Settings that were ignored, and why; the binary logs them once logging is up.
    pub warnings: Vec<String>,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            service_name: "lumen".to_owned(),
            resource: Vec::new(),
            sampler: Sampler::default(),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            schedule_delay: Duration::from_secs(5),
            warnings: Vec::new(),
        }
    }
}

impl fmt::Debug for OtelConfig {
    /// Header values are often credentials: names only; the endpoint redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelConfig")
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(crate::redact::url),
            )
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("timeout", &self.timeout)
            .field("service_name", &self.service_name)
            .field("resource", &self.resource)
            .field("sampler", &self.sampler)
            .field("max_queue_size", &self.max_queue_size)
            .field("max_export_batch_size", &self.max_export_batch_size)
            .field("schedule_delay", &self.schedule_delay)
            .finish_non_exhaustive()
    }
}

/// `OTEL_TRACES_SAMPLER` (+ `OTEL_TRACES_SAMPLER_ARG`): the decision for a trace Lumen starts,
/// and whether a caller's decision (the `traceparent` sampled flag) wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    /// Follow the incoming `traceparent`'s sampled flag when there is one (`parentbased_*`).
    pub parent_based: bool,
    /// The share of traces sampled when Lumen decides: 1.0 (`always_on`), 0.0 (`always_off`),
    /// or the ratio of `traceidratio`.
    pub ratio: f64,
}

impl Default for Sampler {
    /// `parentbased_always_on`, the specification's default.
    fn default() -> Self {
        Self {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

impl Sampler {
    fn new(parent_based: bool, ratio: f64) -> Self {
        Self {
            parent_based,
            ratio,
        }
    }

    /// Whether to record a request: `parent` is the incoming sampled flag, if a valid
    /// `traceparent` came in. Only a parent-based sampler reads it, so under a plain one
    /// (`always_off`, `traceidratio`) no caller can turn recording on, or off. `trace_id` is
    /// called only for a ratio, which compares the trace id's last 56 bits (the random part of
    /// a W3C trace id), so every service with the same ratio keeps the same traces.
    pub fn sampled(&self, parent: Option<bool>, trace_id: impl FnOnce() -> [u8; 16]) -> bool {
        if self.parent_based {
            if let Some(p) = parent {
                return p;
            }
        }
        if self.ratio >= 1.0 {
            return true;
        }
        if self.ratio <= 0.0 {
            return false;
        }
        let mut low = [0u8; 8];
        low[1..].copy_from_slice(&trace_id()[9..]);
        let r = u64::from_be_bytes(low);
        (r as f64) < self.ratio * (1u64 << 56) as f64
    }
}

impl OtelConfig {
    /// Reads the `OTEL_*` variables in `vars` (usually `std::env::vars()`). An empty value
    /// counts as unset.
    pub fn from_vars<I: IntoIterator<Item = (String, String)>>(vars: I) -> Self {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, v)| k.starts_with("OTEL_") && !v.trim().is_empty())
            .collect();
        let get = |k: &str| {
            vars.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.trim())
        };
        let mut cfg = Self::default();
        let mut warnings: Vec<String> = Vec::new();

        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let exporter_none = match get("OTEL_TRACES_EXPORTER") {
            None => false,
            Some(v) => {
                let list: Vec<String> = v
                    .split(',')
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect();
                if list.iter().any(|s| s == "none") {
                    true
                } else {
                    if list.iter().any(|s| s != "otlp") {
                        warnings.push(format!(
                            "OTEL_TRACES_EXPORTER={v}: only `otlp` (or `none`) is supported; using otlp"
                        ));
                    }
                    false
                }
            }
        };
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.to_owned())),
            (None, Some(base)) => Some((
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("{}/v1/traces", base.trim_end_matches('/')),
            )),
            (None, None) => None,
        };
        cfg.endpoint = match endpoint {
            _ if disabled || exporter_none => None,
            None => None,
            Some((var, url)) => match check_url(&url) {
                Ok(()) => Some(url),
                Err(why) => {
                    warnings.push(format!("{var}: {why}; traces are not exported"));
                    None
                }
            },
        };

        let protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(p) = protocol {
            if p != "http/protobuf" {
                warnings.push(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={p}: Lumen exports OTLP over http/protobuf only; \
                     using it (point the endpoint at the collector's OTLP/HTTP port, usually 4318)"
                ));
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        ] {
            if let Some(v) = get(var).filter(|v| *v != "none") {
                warnings.push(format!(
                    "{var}={v}: compression is not supported; sending uncompressed"
                ));
            }
        }

        // Header values are usually credentials, and a malformed entry is usually a credential
        // written the wrong way (`Authorization: Bearer ...`): warnings name the entry by its
        // position, and show a header's name only once it is a valid name.
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            for (n, entry) in pairs(get(var).unwrap_or_default()).into_iter().enumerate() {
                let n = n + 1;
                let Some((k, v)) = entry else {
                    warnings.push(format!(
                        "{var}: entry {n} is not key=value; ignored (not shown: it may hold a credential)"
                    ));
                    continue;
                };
                if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                    warnings.push(format!(
                        "{var}: entry {n} does not start with a valid header name; ignored (not shown: it may hold a credential)"
                    ));
                    continue;
                }
                if http::HeaderValue::from_str(&v).is_err() {
                    warnings.push(format!(
                        "{var}: the value of `{k}` is not a valid header value; ignored"
                    ));
                    continue;
                }
                cfg.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&k));
                cfg.headers.push((k, Secret::new(v)));
            }
        }

        let millis = |var: &str, default: Duration, warnings: &mut Vec<String>| match get(var) {
            None => default,
            Some(v) => match v.parse::<u64>() {
                Ok(ms) => Duration::from_millis(ms),
                Err(_) => {
                    warnings.push(format!(
                        "{var}={v}: not a number of milliseconds; using the default"
                    ));
                    default
                }
            },
        };
        let timeout = millis("OTEL_EXPORTER_OTLP_TIMEOUT", cfg.timeout, &mut warnings);
        cfg.timeout = millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", timeout, &mut warnings);
        cfg.schedule_delay = millis("OTEL_BSP_SCHEDULE_DELAY", cfg.schedule_delay, &mut warnings);
        let count = |var: &str, default: usize, warnings: &mut Vec<String>| match get(var) {
            None => default,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    warnings.push(format!(
                        "{var}={v}: not a positive integer; using the default"
                    ));
                    default
                }
            },
        };
        cfg.max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", cfg.max_queue_size, &mut warnings);
        cfg.max_export_batch_size = count(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            cfg.max_export_batch_size,
            &mut warnings,
        )
        .min(cfg.max_queue_size);

        let list = get("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        let items = list.split(',').map(str::trim).filter(|s| !s.is_empty());
        for (item, entry) in items.zip(pairs(list)) {
            let Some((k, v)) = entry else {
                warnings.push(format!(
                    "OTEL_RESOURCE_ATTRIBUTES: `{item}` is not key=value; ignored"
                ));
                continue;
            };
            if k == "service.name" {
                cfg.service_name = v;
            } else {
                cfg.resource.retain(|(n, _)| *n != k);
                cfg.resource.push((k, v));
            }
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            name.clone_into(&mut cfg.service_name);
        }

        cfg.sampler = sampler(
            get("OTEL_TRACES_SAMPLER"),
            get("OTEL_TRACES_SAMPLER_ARG"),
            &mut warnings,
        );
        cfg.warnings = warnings;
        cfg
    }
}

/// An absolute `http://` or `https://` URL with a host. The reason shows the URL redacted: a
/// collector's token is often its user name or a query value.
fn check_url(url: &str) -> Result<(), String> {
    let shown = || crate::redact::url(url);
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("`{}` is not a URL", shown()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!("`{}` must start with http:// or https://", shown()));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{}` has no host", shown()));
    }
    Ok(())
}

/// `key=value,key2=value2` with percent-encoded values (the W3C baggage form the
/// specification uses for headers and resource attributes): one entry per non-empty item,
/// `None` where an item is not `key=value`. The caller words the warning, because only it
/// knows whether the item may be shown.
fn pairs(list: &str) -> Vec<Option<(String, String)>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Some((
                crate::path::percent_decode(k.trim()),
                crate::path::percent_decode(v.trim()),
            )),
            _ => None,
        })
        .collect()
}

/// The sampler `OTEL_TRACES_SAMPLER` names. Only the two `*traceidratio` samplers read
/// `OTEL_TRACES_SAMPLER_ARG`; with any other (the default included) a ratio there is ignored,
/// as the specification says, and logged, as it also says: `OTEL_TRACES_SAMPLER_ARG=0` alone
/// leaves `parentbased_always_on` in charge, which records every request, and any caller
/// can have its trace recorded by sending a sampled `traceparent`.
fn sampler(name: Option<&str>, arg: Option<&str>, warnings: &mut Vec<String>) -> Sampler {
    let mut ratio = || match arg {
        None => 1.0,
        Some(a) => match a.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => {
                warnings.push(format!(
                    "OTEL_TRACES_SAMPLER_ARG={a}: not a ratio between 0 and 1; using 1.0"
                ));
                1.0
            }
        },
    };
    let (parent_based, ratio) = match name.map(str::to_ascii_lowercase).as_deref() {
        Some("traceidratio") => return Sampler::new(false, ratio()),
        Some("parentbased_traceidratio") => return Sampler::new(true, ratio()),
        None | Some("parentbased_always_on") => (true, 1.0),
        Some("always_on") => (false, 1.0),
        Some("always_off") => (false, 0.0),
        Some("parentbased_always_off") => (true, 0.0),
        Some(other) => {
            warnings.push(format!(
                "OTEL_TRACES_SAMPLER={other}: unknown sampler; using parentbased_always_on"
            ));
            return Sampler::default();
        }
    };
    if let Some(a) = arg {
        let which = name.map_or_else(
            || "the default sampler, parentbased_always_on,".to_owned(),
            |n| format!("OTEL_TRACES_SAMPLER={n}"),
        );
        warnings.push(format!(
            "OTEL_TRACES_SAMPLER_ARG={a} is ignored: {which} takes no argument. For a ratio set \
             OTEL_TRACES_SAMPLER=traceidratio (callers' traceparent cannot turn recording on) \
             or parentbased_traceidratio (a sampled traceparent is always recorded)"
        ));
    }
    Sampler::new(parent_based, ratio)
}

#[cfg(test)]
mod tests;
