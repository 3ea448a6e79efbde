//! The HTTP layer under `object_store`, bounding every response body before a byte of it is
//! read. `object_store` collects bodies whole — a ranged GET's bytes, S3's error documents,
//! the multipart XML — into a buffer sized from the Content-Length the server declares, so
//! without this an endpoint that lies (4 GiB of body for a 36-byte range, an endless error
//! document) decides how much memory coffer takes. Here:
//!
//! - a `206 Partial Content` answer to a ranged GET must name exactly the range asked for in
//!   Content-Range (shorter only where the object ends) and declare exactly that many bytes
//!   in Content-Length;
//! - any other success answer to a ranged GET is refused (S3 always honours Range, and
//!   coffer never downloads an object whole);
//! - every other body (errors, XML, credentials) may declare and carry at most
//!   [`MAX_OTHER_BODY`] bytes; a HEAD answer none;
//! - and each body is counted as it streams: the first chunk past its bound is an error,
//!   whatever was declared, so nothing past the bound is ever buffered.
//!
//! A refusal is a [`BadAnswer`] inside `object_store`'s error, where the S3 reader finds it
//! to name the object and offset.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService, ReqwestConnector,
};

/// Largest body accepted in any answer but a ranged GET's bytes: S3's error documents and
/// multipart replies are a few hundred bytes, credential answers a few KiB.
pub(super) const MAX_OTHER_BODY: u64 = 1 << 20;

/// Why an answer was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct BadAnswer(pub(super) String);

fn refuse(detail: String) -> HttpError {
    // Decode errors are not retried by object_store: asking again would get the same lie.
    HttpError::new(HttpErrorKind::Decode, BadAnswer(detail))
}

/// Connects object_store's usual reqwest client, wrapped in [`Bounded`].
#[derive(Debug, Default)]
pub(super) struct BoundedConnector;

impl HttpConnector for BoundedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Bounded(inner)))
    }
}

#[derive(Debug)]
struct Bounded(HttpClient);

// `HttpService` is declared with `#[async_trait]`; this is the signature that macro gives
// `call`, written out rather than adding the macro crate for one method.
impl HttpService for Bounded {
    fn call<'life0, 'async_trait>(
        &'life0 self,
        req: HttpRequest,
    ) -> Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let asked = Asked::of(&req);
            let response = self.0.execute(req).await?;
            bound(&asked, response)
        })
    }
}

/// What a request lets its answer carry.
#[derive(Debug, PartialEq)]
enum Asked {
    /// A ranged GET of these bytes.
    Range(Range<u64>),
    /// HEAD: headers only.
    Headers,
    Other,
}

impl Asked {
    fn of(req: &HttpRequest) -> Self {
        match req.method().as_str() {
            "HEAD" => Asked::Headers,
            // A Range header in another form than object_store's `bytes=a-b` (which coffer
            // never sends) gets no more room than any other body.
            "GET" => req
                .headers()
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_range_request)
                .map_or(Asked::Other, Asked::Range),
            _ => Asked::Other,
        }
    }
}

/// `bytes=a-b` (inclusive) as the range `a..b+1`.
fn parse_range_request(value: &str) -> Option<Range<u64>> {
    let (first, last) = value.strip_prefix("bytes=")?.split_once('-')?;
    let (first, last): (u64, u64) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some(first..last.checked_add(1)?)
}

/// Check the headers of an answer against its request and cap its body.
fn bound(asked: &Asked, response: HttpResponse) -> Result<HttpResponse, HttpError> {
    let (parts, body) = response.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("(not text)"))
    };
    let declared = match header("content-length") {
        None => None,
        Some(text) => Some(
            text.parse::<u64>()
                .map_err(|_| refuse(format!("unreadable Content-Length {text:?}")))?,
        ),
    };
    let limit = match asked {
        Asked::Range(range) if parts.status.is_success() => {
            let status = parts.status.as_u16();
            if status != 206 {
                return Err(refuse(format!(
                    "status {status} instead of 206 Partial Content for bytes {}..{}",
                    range.start, range.end
                )));
            }
            let len = answered_range(range, header("content-range")).map_err(refuse)?;
            if declared != Some(len) {
                return Err(refuse(format!(
                    "Content-Length {} for a {len}-byte range",
                    declared.map_or("missing".to_string(), |n| n.to_string())
                )));
            }
            len
        }
        // The Content-Length of a HEAD answer is the object's size; no body follows.
        Asked::Headers => 0,
        _ => {
            if let Some(n) = declared.filter(|&n| n > MAX_OTHER_BODY) {
                return Err(refuse(format!(
                    "status {} with a {n}-byte body (at most {MAX_OTHER_BODY} accepted)",
                    parts.status.as_u16()
                )));
            }
            MAX_OTHER_BODY
        }
    };
    let body = HttpResponseBody::new(Capped {
        body,
        left: limit,
        limit,
        failed: false,
    });
    Ok(HttpResponse::from_parts(parts, body))
}

/// The length of the range a 206 answer names, if it is the one asked for: the same first
/// byte, and the same end or the object's end where that comes first.
fn answered_range(asked: &Range<u64>, value: Option<&str>) -> Result<u64, String> {
    let value = value.ok_or_else(|| "206 without Content-Range".to_string())?;
    let parsed = (|| {
        let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
        let (first, last) = range.split_once('-')?;
        let (first, last) = (first.parse::<u64>().ok()?, last.parse::<u64>().ok()?);
        Some((first, last.checked_add(1)?, total.parse::<u64>().ok()?))
    })();
    let Some((first, end, total)) = parsed else {
        return Err(format!("unreadable Content-Range {value:?}"));
    };
    let expected_end = asked.end.min(total);
    if first != asked.start || end != expected_end || first >= end {
        return Err(format!(
            "Content-Range {value:?} for bytes {}..{} asked",
            asked.start, asked.end
        ));
    }
    Ok(end - first)
}

/// A body that fails at the first chunk past `limit` bytes.
struct Capped {
    body: HttpResponseBody,
    left: u64,
    limit: u64,
    failed: bool,
}

impl Body for Capped {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some(Ok(frame)) = &frame
            && let Some(data) = frame.data_ref()
        {
            let n = data.len() as u64;
            if n > self.left {
                self.failed = true;
                let limit = self.limit;
                return Poll::Ready(Some(Err(refuse(format!(
                    "more than the {limit} bytes of body it may send"
                )))));
            }
            self.left -= n;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // object_store sizes its buffer from this: never more than may still arrive.
        let inner = self.body.size_hint();
        let upper = inner.upper().map_or(self.left, |u| u.min(self.left));
        let mut hint = SizeHint::new();
        hint.set_upper(upper);
        hint.set_lower(inner.lower().min(upper));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &str)], body: &[u8]) -> HttpResponse {
        let mut response = HttpResponse::new(HttpResponseBody::from(body.to_vec()));
        *response.status_mut() = status.try_into().unwrap();
        for (name, value) in headers {
            response.headers_mut().insert(*name, value.parse().unwrap());
        }
        response
    }

    fn refusal(result: Result<HttpResponse, HttpError>) -> String {
        let e = result.expect_err("the answer should be refused");
        let source = std::error::Error::source(&e).expect("a BadAnswer inside");
        source
            .downcast_ref::<BadAnswer>()
            .expect("a BadAnswer")
            .to_string()
    }

    fn collect(response: HttpResponse) -> Result<Bytes, HttpError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(response.into_body().bytes())
    }

    #[test]
    fn range_requests_parse_as_object_store_writes_them() {
        assert_eq!(parse_range_request("bytes=0-8191"), Some(0..8192));
        assert_eq!(parse_range_request("bytes=5-5"), Some(5..6));
        assert_eq!(parse_range_request("bytes=6-5"), None);
        assert_eq!(parse_range_request("bytes=-36"), None);
        assert_eq!(parse_range_request("bytes=10-"), None);
    }

    #[test]
    fn the_range_asked_for_is_accepted_and_shortened_only_at_the_object_end() {
        let asked = Asked::Range(100..136);
        let ok = answer(
            206,
            &[
                ("content-range", "bytes 100-135/1000"),
                ("content-length", "36"),
            ],
            &[7; 36],
        );
        assert_eq!(collect(bound(&asked, ok).unwrap()).unwrap().len(), 36);
        let at_end = answer(
            206,
            &[
                ("content-range", "bytes 100-119/120"),
                ("content-length", "20"),
            ],
            &[7; 20],
        );
        assert!(bound(&asked, at_end).is_ok());
    }

    #[test]
    fn another_range_or_length_is_refused_before_the_body() {
        let asked = Asked::Range(100..136);
        for (range, length, why) in [
            (
                "bytes 100-135/1000",
                "4294967296",
                "Content-Length 4294967296",
            ),
            ("bytes 100-135/1000", "10", "Content-Length 10"),
            (
                "bytes 0-4294967295/4294967296",
                "4294967296",
                "bytes 0-4294967295",
            ),
            ("bytes 100-119/1000", "20", "bytes 100-119/1000"),
            ("bytes 101-136/1000", "36", "bytes 101-136"),
            ("bytes */1000", "36", "unreadable Content-Range"),
        ] {
            let lie = answer(
                206,
                &[("content-range", range), ("content-length", length)],
                b"",
            );
            let detail = refusal(bound(&asked, lie));
            assert!(detail.contains(why), "{range} {length}: {detail}");
        }
        let whole = answer(200, &[("content-length", "36")], &[0; 36]);
        assert!(refusal(bound(&asked, whole)).contains("status 200 instead of 206"));
        let no_range = answer(206, &[("content-length", "36")], &[0; 36]);
        assert!(refusal(bound(&asked, no_range)).contains("without Content-Range"));
    }

    #[test]
    fn other_bodies_are_bounded_by_declaration_and_by_count() {
        let huge = answer(403, &[("content-length", "4294967296")], b"");
        assert!(refusal(bound(&Asked::Range(0..36), huge)).contains("4294967296-byte body"));
        // No Content-Length (chunked): counted as it comes.
        let long = vec![b'x'; MAX_OTHER_BODY as usize + 1];
        let endless = bound(&Asked::Other, answer(500, &[], &long)).unwrap();
        let e = collect(endless).expect_err("past the bound");
        assert!(e.to_string().contains("more than the 1048576 bytes"), "{e}");
        let small = bound(&Asked::Other, answer(403, &[], b"<Error/>")).unwrap();
        assert_eq!(&collect(small).unwrap()[..], b"<Error/>");
        // A HEAD answer declares the object's size and has no body.
        let head = answer(200, &[("content-length", "4294967296")], b"");
        assert!(bound(&Asked::Headers, head).is_ok());
    }
}
