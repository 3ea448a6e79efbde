//! Errors of the object store as coffer's: `object_store`'s nested messages classified into
//! [`RemoteProblem`]s and cut to one line that names the request, the HTTP status and S3's
//! error code; an answer the bounded HTTP layer refused (`bounded.rs`) becomes
//! [`Error::RemoteAnswer`] with its offset.

use super::bounded;
use crate::error::{Error, RemoteProblem};

/// Classify an `object_store` error into the user-facing problem kinds.
pub(super) fn classify(e: &object_store::Error) -> RemoteProblem {
    let text = e.to_string();
    match e {
        object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => {
            RemoteProblem::NoBucket
        }
        object_store::Error::NotFound { .. } => RemoteProblem::NotFound,
        object_store::Error::Unauthenticated { .. } => RemoteProblem::Credentials,
        object_store::Error::PermissionDenied { .. }
            if text.contains("InvalidAccessKeyId")
                || text.contains("SignatureDoesNotMatch")
                || text.contains("InvalidClientTokenId")
                || text.contains("ExpiredToken") =>
        {
            RemoteProblem::Credentials
        }
        object_store::Error::PermissionDenied { .. } => RemoteProblem::Denied,
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            RemoteProblem::Exists
        }
        _ if text.contains("NoSuchBucket") => RemoteProblem::NoBucket,
        // DeleteObjects reports refusals inside a 200 response, as a generic error.
        _ if text.contains("AccessDenied") => RemoteProblem::Denied,
        // No keys in the environment: object_store fell back to the EC2 instance metadata.
        _ if text.contains("169.254.169.254") => RemoteProblem::Credentials,
        _ => RemoteProblem::Other,
    }
}

pub(super) fn remote_error(
    location: &str,
    problem: RemoteProblem,
    e: &dyn std::error::Error,
) -> Error {
    let mut chain = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        chain.push_str(": ");
        chain.push_str(&c.to_string());
        cause = c.source();
    }
    let detail = if chain.contains("169.254.169.254") {
        "no credentials: AWS_ACCESS_KEY_ID is not set and no instance role answered".to_string()
    } else {
        concise(&chain)
    };
    Error::Remote {
        location: location.to_string(),
        problem,
        detail,
    }
}

/// One line out of object_store's nested message: the request, the HTTP status and S3's
/// error code when there is a response ("HEAD: 403 Forbidden (SignatureDoesNotMatch)"),
/// else the chain of causes ("connection refused").
pub(super) fn concise(chain: &str) -> String {
    let between = |text: &str, open: &str, close: &str| -> Option<String> {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)? + start;
        Some(text[start..end].trim().to_string())
    };
    let method = between(chain, "Error performing ", " ");
    let status =
        between(chain, "status code: ", ":").or_else(|| between(chain, "status code: ", "\n"));
    let code = between(chain, "<Code>", "</Code>");
    if let (Some(method), Some(status)) = (&method, &status) {
        return match code {
            Some(code) => format!("{method}: {status} ({code})"),
            None => format!("{method}: {status}"),
        };
    }
    // No response: name the request and the innermost cause ("connection refused").
    if let Some(method) = &method
        && let Some(url) = between(chain, &format!("Error performing {method} "), " ")
    {
        let retries = between(chain, "after ", " retries")
            .map(|n| format!(" (after {n} retries)"))
            .unwrap_or_default();
        let causes: Vec<&str> = chain.rsplit(": ").take(2).collect();
        let cause = causes.into_iter().rev().collect::<Vec<_>>().join(": ");
        return format!("{method} {url}: {}{retries}", first_line(&cause));
    }
    let mut parts: Vec<String> = Vec::new();
    for part in chain.split(": ") {
        let part = first_line(part);
        if !part.is_empty() && !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

pub(super) fn store_error(location: &str, e: object_store::Error) -> Error {
    remote_error(location, classify(&e), &e)
}

/// Why the HTTP layer refused an answer, if it did.
pub(super) fn bad_answer(e: &object_store::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(bad) = c.downcast_ref::<bounded::BadAnswer>() {
            return Some(bad.0.clone());
        }
        cause = c.source();
    }
    None
}

/// The error of a ranged GET at `offset`.
pub(super) fn get_error(location: &str, offset: u64, e: object_store::Error) -> Error {
    match bad_answer(&e) {
        Some(detail) => Error::RemoteAnswer {
            location: location.to_string(),
            offset,
            detail,
        },
        None => store_error(location, e),
    }
}
