//! Bearer tokens on the two HTTP servers (`edgeloop serve` and
//! `edgeloop-trainer serve`).

use axum::http::{header, HeaderMap};

/// The token of the request's `Authorization: Bearer <token>` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
}

/// Whether `given` is `want`, compared in time independent of where they
/// differ.
pub fn token_matches(given: &[u8], want: &str) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
