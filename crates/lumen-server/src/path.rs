//! URL path segments as clients send them.

/// Decodes `%XX` escapes so `/v1/models/org%2Fname` finds `org/name`. Only a `%` followed by
/// exactly two hex digits is an escape (`%+1` is not); bytes that are not UTF-8 afterwards
/// become U+FFFD, so the name can never match a model or key by accident.
pub(crate) fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests;
