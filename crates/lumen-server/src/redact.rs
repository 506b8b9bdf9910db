//! Secrets out of URLs before any output: `lumen config print` and `check`, start-up and
//! reload logs, warnings, error messages. One function, so every place that shows a URL hides
//! the same parts.
//!
//! A URL given to Lumen is the operator's, but it is often a credential too: Redis passwords
//! in the userinfo or in `?pass=` (`redis+unix://`), engine keys in `?api_key=`, collector
//! tokens as the user name. Passwords are also written unencoded, so `/`, `?`, `#` and `@`
//! can sit inside the userinfo, where a parser would end the authority early and show the rest
//! as a path. The rules are therefore positional and err on the side of hiding:
//!
//! - everything before the **last** `@` (after `scheme://`) is userinfo, user name included;
//! - every query value, and a query item without `=`;
//! - the fragment;
//! - when a `?` or `#` comes before that `@`, everything after the scheme: the password may
//!   hold them, or the `@` may sit in a query value, and the two cannot be told apart.
//!
//! The scheme, host, port, path and query keys stay, so the output still says where a URL
//! points. A URL with an `@` in its path or query loses its host to these rules: shown too
//! little, never too much.

/// What a hidden part is replaced with.
pub const REDACTED: &str = "<redacted>";

/// `url` with its userinfo, query values and fragment replaced by [`REDACTED`]; text that is
/// not a URL comes back unchanged unless it holds an `@`, `?` or `#`.
pub fn url(url: &str) -> String {
    let (scheme, rest) = split_scheme(url);
    let mut out = String::with_capacity(url.len() + 16);
    out.push_str(scheme);
    let rest = match rest.rsplit_once('@') {
        // A `?` or `#` before the `@`: either the password holds one, or the `@` is inside a
        // query or fragment and what follows it is a value. Nothing tells them apart.
        Some((before, _)) if before.contains(['?', '#']) => {
            out.push_str(REDACTED);
            return out;
        }
        Some((_userinfo, after)) => {
            out.push_str(REDACTED);
            out.push('@');
            after
        }
        None => rest,
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    match rest.split_once('?') {
        Some((head, query)) => {
            out.push_str(head);
            out.push('?');
            for (i, item) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match item.split_once('=') {
                    Some((key, _)) => {
                        out.push_str(key);
                        out.push('=');
                        out.push_str(REDACTED);
                    }
                    None if item.is_empty() => {}
                    None => out.push_str(REDACTED),
                }
            }
        }
        None => out.push_str(rest),
    }
    if let Some(f) = fragment {
        out.push('#');
        if !f.is_empty() {
            out.push_str(REDACTED);
        }
    }
    out
}

/// `scheme://` and the rest. Without `//` after the scheme (`user:pw@host`, `unix:/path`)
/// there is no scheme to keep: what looks like one may be a user name.
fn split_scheme(url: &str) -> (&str, &str) {
    let Some(colon) = url.find("://") else {
        return ("", url);
    };
    let scheme = &url[..colon];
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if valid {
        url.split_at(colon + 3)
    } else {
        ("", url)
    }
}

#[cfg(test)]
mod tests;
