//! A bucket's Object Lock configuration (GetObjectLockConfiguration, `GET /{bucket}?object-lock`):
//! whether Object Lock is enabled and the default retention S3 puts on every new object
//! that asks for none. `object_store` has no call for it, so this module makes the one
//! request itself: signed with AWS Signature Version 4 ([`sigv4`]), with the credentials,
//! endpoint and region the archive client uses (the same builder, the same credential
//! provider), through reqwest (already in the graph for `object_store`).
//!
//! The answer only ever informs: a backup reports it, `prune` keeps objects it locks. A key
//! that may not read the configuration (a write-only backup key usually may not: the call
//! needs `s3:GetBucketObjectLockConfiguration`) or any other failure gives
//! [`BucketLock::Unknown`], never an error. The response body is read to at most
//! [`MAX_ANSWER`] bytes and parsed by tag: a hostile server can make the answer wrong (as
//! it can any answer about its own bucket), not large.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::ClientOptions;
use object_store::aws::AmazonS3ConfigKey;

use super::LockMode;

/// Largest configuration answer read (a real one is a few hundred bytes).
const MAX_ANSWER: usize = 16 << 10;
/// The whole request, connection included.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A bucket's default retention period, as S3 states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Days(u32),
    Years(u32),
}

/// The retention S3 gives each new object of a bucket that asks for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRetention {
    pub mode: LockMode,
    pub period: Period,
}

impl DefaultRetention {
    /// Days an object stays locked at most: years count 366 days, so that a date computed
    /// from it is never before the one S3 keeps (prune waits at most a day too long).
    pub fn max_days(&self) -> u32 {
        match self.period {
            Period::Days(d) => d,
            Period::Years(y) => y.saturating_mul(366),
        }
    }
}

/// What a bucket says about Object Lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketLock {
    /// Object Lock is not enabled on the bucket: objects can be deleted.
    Disabled,
    /// Enabled, without a default retention: only objects uploaded with one are locked.
    NoDefault,
    /// Enabled, and every new object gets this retention unless it asks for another.
    Default(DefaultRetention),
    /// Not known; why (no permission, the server did not answer, ...).
    Unknown(String),
}

impl BucketLock {
    /// `bucket default COMPLIANCE 30 days`, `none (...)`, `unknown (...)`.
    pub fn describe(&self) -> String {
        match self {
            BucketLock::Disabled => "none (Object Lock is not enabled on the bucket)".into(),
            BucketLock::NoDefault => {
                "none (Object Lock is enabled on the bucket, without a default retention)".into()
            }
            BucketLock::Default(r) => {
                let mode = match r.mode {
                    LockMode::Compliance => "COMPLIANCE",
                    LockMode::Governance => "GOVERNANCE",
                };
                let (n, unit) = match r.period {
                    Period::Days(d) => (d, "day"),
                    Period::Years(y) => (y, "year"),
                };
                let s = if n == 1 { "" } else { "s" };
                format!("bucket default {mode} {n} {unit}{s}")
            }
            BucketLock::Unknown(why) => format!("unknown ({why})"),
        }
    }
}

/// How long an answer is reused: uploads, the summary and prune of one run ask once, a
/// daemon sees a changed configuration within minutes.
const REUSE: Duration = Duration::from_secs(300);

/// The Object Lock configuration of `bucket`; never fails (see [`BucketLock::Unknown`]).
pub fn bucket_lock(bucket: &str) -> BucketLock {
    type Answers = HashMap<(Option<String>, String), (Instant, BucketLock)>;
    static ANSWERS: OnceLock<Mutex<Answers>> = OnceLock::new();
    let answers = ANSWERS.get_or_init(|| Mutex::new(HashMap::new()));
    let key = (super::settings().endpoint, bucket.to_string());
    if let Some((at, lock)) = answers.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && at.elapsed() < REUSE
    {
        return lock.clone();
    }
    let lock = match fetch(bucket) {
        Ok(lock) => lock,
        Err(why) => {
            tracing::debug!(bucket, why = %why, "bucket Object Lock configuration unknown");
            BucketLock::Unknown(why)
        }
    };
    answers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, (Instant::now(), lock.clone()));
    lock
}

fn fetch(bucket: &str) -> Result<BucketLock, String> {
    let client = ClientOptions::new().with_connect_timeout(Duration::from_secs(10));
    let builder = super::builder(bucket, client).map_err(|e| e.to_string())?;
    let get = |k: AmazonS3ConfigKey| builder.get_config_value(&k).filter(|v| !v.is_empty());
    let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted =
        get(AmazonS3ConfigKey::VirtualHostedStyleRequest).as_deref() == Some("true");
    // The bucket's URL as object_store forms it (builder.rs, `bucket_endpoint`).
    let url = match (
        get(AmazonS3ConfigKey::S3Endpoint).or(get(AmazonS3ConfigKey::Endpoint)),
        virtual_hosted,
    ) {
        (Some(e), true) => e,
        (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    };
    let url = reqwest::Url::parse(&url).map_err(|e| format!("endpoint {url}: {e}"))?;
    let store = builder.build().map_err(|e| e.to_string())?;
    super::block_on(async move {
        let creds = store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| format!("no credentials: {}", super::concise(&e.to_string())))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs() as i64;
        let request = sigv4::Request::get_object_lock(&url, &super::rfc3339_utc(now))?;
        let key = sigv4::Key {
            id: &creds.key_id,
            secret: &creds.secret_key,
            token: creds.token.as_deref(),
        };
        let headers = request.signed_headers(&key, &region, "s3");
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut get = client.get(request.url.clone());
        for (name, value) in &headers {
            get = get.header(name.as_str(), value.as_str());
        }
        let mut response = get.send().await.map_err(|e| first_cause(&e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| first_cause(&e))? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err(format!("the answer is longer than {MAX_ANSWER} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_answer(status, &String::from_utf8_lossy(&body))
    })
    .map_err(|e| e.to_string())?
}

fn first_cause(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

/// The text between `<tag>` and `</tag>`, the first time it occurs.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim())
}

/// The configuration from a GetObjectLockConfiguration answer (`status`, `body`).
fn parse_answer(status: u16, body: &str) -> Result<BucketLock, String> {
    let code = element(body, "Code").unwrap_or("");
    match status {
        200 => {}
        // S3's answer for a bucket made without Object Lock.
        404 if code == "ObjectLockConfigurationNotFoundError" => return Ok(BucketLock::Disabled),
        403 if code == "AccessDenied" || code.is_empty() => {
            return Err("no permission to read the bucket's Object Lock configuration".into());
        }
        _ if code.is_empty() => return Err(format!("the server answered {status}")),
        _ => return Err(format!("the server answered {status} ({})", safe(code))),
    }
    if element(body, "ObjectLockEnabled") != Some("Enabled") {
        return Ok(BucketLock::Disabled);
    }
    let Some(retention) = element(body, "DefaultRetention") else {
        return Ok(BucketLock::NoDefault);
    };
    let mode = match element(retention, "Mode") {
        Some("COMPLIANCE") => LockMode::Compliance,
        Some("GOVERNANCE") => LockMode::Governance,
        other => {
            return Err(format!(
                "the bucket's default retention has mode {:?}",
                other.map(safe)
            ));
        }
    };
    // moto writes the period it was not given as 0; S3 leaves it out. Both mean "not this".
    let number = |tag: &str| -> Result<Option<u32>, String> {
        match element(retention, tag) {
            None => Ok(None),
            Some(n) => match n.parse::<u32>() {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(n)),
                Err(_) => Err(format!(
                    "the bucket's default retention has {tag} {:?}",
                    safe(n)
                )),
            },
        }
    };
    let period = match (number("Days")?, number("Years")?) {
        (Some(d), None) => Period::Days(d),
        (None, Some(y)) => Period::Years(y),
        _ => {
            return Err(
                "the bucket's default retention names neither days nor years (or both)".into(),
            );
        }
    };
    Ok(BucketLock::Default(DefaultRetention { mode, period }))
}

/// A server's word, made printable and short.
fn safe(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// AWS Signature Version 4 for one S3 request, headers-only (the signature in the
/// `Authorization` header), as AWS specifies it: a canonical request (method, URI, sorted
/// query, sorted lower-case headers, signed header names, payload hash), a string to sign
/// naming the scope `DATE/REGION/SERVICE/aws4_request`, and an HMAC-SHA256 chain from
/// `"AWS4" + secret` through date, region, service and `aws4_request`. Checked against
/// AWS's published examples in the tests below.
pub mod sigv4 {
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};
    use zeroize::Zeroizing;

    use crate::format::hex;

    /// SHA-256 of an empty body: a GET's payload hash.
    pub const EMPTY_SHA256: &str =
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// An access key (the secret is only ever used as an HMAC key here).
    pub struct Key<'a> {
        pub id: &'a str,
        pub secret: &'a str,
        /// The session token of temporary credentials.
        pub token: Option<&'a str>,
    }

    /// A request to sign: everything but the signature.
    pub struct Request {
        pub method: &'static str,
        pub url: reqwest::Url,
        /// The path as signed (S3: each segment URI-encoded once).
        pub canonical_uri: String,
        pub canonical_query: String,
        /// Lower-case names and trimmed values, without `authorization`.
        pub headers: Vec<(String, String)>,
        pub payload_sha256: String,
        /// `YYYYMMDDTHHMMSSZ`.
        pub amz_date: String,
    }

    fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(data);
        Zeroizing::new(mac.finalize().into_bytes().to_vec())
    }

    /// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters stay, every other
    /// byte is `%XX` (upper case); `/` stays when `keep_slash` (paths).
    pub fn uri_encode(s: &str, keep_slash: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// The canonical query string: each name and value encoded, sorted by name then value.
    pub fn canonical_query(pairs: &[(&str, &str)]) -> String {
        let mut encoded: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        encoded.sort();
        encoded
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// `20150830T123600Z` from `2015-08-30T12:36:00Z`.
    fn amz_date(rfc3339: &str) -> String {
        rfc3339.chars().filter(|c| *c != '-' && *c != ':').collect()
    }

    impl Request {
        /// GetObjectLockConfiguration of the bucket at `bucket_url`, at time `now` (RFC 3339).
        pub fn get_object_lock(bucket_url: &reqwest::Url, now: &str) -> Result<Self, String> {
            let mut url = bucket_url.clone();
            url.set_query(Some("object-lock"));
            let host = url.host_str().ok_or("the endpoint names no host")?;
            // As reqwest sends it: the port only when it is not the scheme's own.
            let host = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_string(),
            };
            let amz_date = amz_date(now);
            Ok(Request {
                method: "GET",
                canonical_uri: uri_encode(&percent_decoded(url.path()), true),
                canonical_query: canonical_query(&[("object-lock", "")]),
                headers: vec![
                    ("host".into(), host),
                    ("x-amz-content-sha256".into(), EMPTY_SHA256.into()),
                    ("x-amz-date".into(), amz_date.clone()),
                ],
                payload_sha256: EMPTY_SHA256.into(),
                amz_date,
                url,
            })
        }

        /// The canonical request (SigV4 task 1) for `headers`, and the signed header names.
        fn canonical(&self, headers: &[(String, String)]) -> (String, String) {
            let mut sorted: Vec<&(String, String)> = headers.iter().collect();
            sorted.sort();
            let names = sorted
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(";");
            let lines: String = sorted.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
            let request = format!(
                "{}\n{}\n{}\n{lines}\n{names}\n{}",
                self.method, self.canonical_uri, self.canonical_query, self.payload_sha256
            );
            (request, names)
        }

        /// The `Authorization` header value for `key` in `region` for `service`.
        pub fn authorization(&self, key: &Key<'_>, region: &str, service: &str) -> String {
            self.authorization_of(&self.headers, key, region, service)
        }

        fn authorization_of(
            &self,
            headers: &[(String, String)],
            key: &Key<'_>,
            region: &str,
            service: &str,
        ) -> String {
            let date = &self.amz_date[..self.amz_date.len().min(8)];
            let scope = format!("{date}/{region}/{service}/aws4_request");
            let (canonical, names) = self.canonical(headers);
            let to_sign = format!(
                "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
                self.amz_date,
                hex(&Sha256::digest(canonical.as_bytes()))
            );
            let secret = Zeroizing::new(format!("AWS4{}", key.secret));
            let k_date = hmac(secret.as_bytes(), date.as_bytes());
            let k_region = hmac(&k_date, region.as_bytes());
            let k_service = hmac(&k_region, service.as_bytes());
            let k_signing = hmac(&k_service, b"aws4_request");
            let signature = hex(&hmac(&k_signing, to_sign.as_bytes()));
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={names}, Signature={signature}",
                key.id
            )
        }

        /// Every header to send: the request's own, the session token (signed) when the
        /// key has one, and `authorization`.
        pub fn signed_headers(
            &self,
            key: &Key<'_>,
            region: &str,
            service: &str,
        ) -> Vec<(String, String)> {
            let mut headers = self.headers.clone();
            if let Some(token) = key.token {
                headers.push(("x-amz-security-token".into(), token.to_string()));
            }
            let auth = self.authorization_of(&headers, key, region, service);
            headers.push(("authorization".into(), auth));
            headers
        }
    }

    /// `%XX` sequences of a URL path back to bytes (the URL parser encoded some), so the
    /// canonical URI encodes each byte exactly once.
    fn percent_decoded(path: &str) -> String {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex_at = |j: usize| {
                (bytes.get(j).copied().filter(u8::is_ascii_hexdigit))
                    .map(|b| (b as char).to_digit(16).unwrap_or(0) as u8)
            };
            if bytes[i] == b'%'
                && let (Some(h), Some(l)) = (hex_at(i + 1), hex_at(i + 2))
            {
                out.push(h * 16 + l);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::sigv4::{EMPTY_SHA256, Key, Request, canonical_query};
    use super::*;

    /// The credentials of AWS's SigV4 test suite.
    const SUITE: Key<'static> = Key {
        id: "AKIDEXAMPLE",
        secret: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        token: None,
    };

    fn suite_request(method: &'static str, query: &str) -> Request {
        Request {
            method,
            url: reqwest::Url::parse("https://example.amazonaws.com/").unwrap(),
            canonical_uri: "/".into(),
            canonical_query: query.into(),
            headers: vec![
                ("host".into(), "example.amazonaws.com".into()),
                ("x-amz-date".into(), "20150830T123600Z".into()),
            ],
            payload_sha256: EMPTY_SHA256.into(),
            amz_date: "20150830T123600Z".into(),
        }
    }

    #[test]
    fn signatures_match_the_aws_sigv4_test_suite() {
        let head = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=";
        // get-vanilla.
        assert_eq!(
            suite_request("GET", "").authorization(&SUITE, "us-east-1", "service"),
            format!("{head}5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
        // get-vanilla-query-order-key-case: the query is sorted before signing.
        let query = canonical_query(&[("Param2", "value2"), ("Param1", "value1")]);
        assert_eq!(query, "Param1=value1&Param2=value2");
        assert_eq!(
            suite_request("GET", &query).authorization(&SUITE, "us-east-1", "service"),
            format!("{head}b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")
        );
    }

    #[test]
    fn signature_matches_the_s3_get_object_example() {
        // "Example: GET Object" of the S3 API reference (sig-v4-header-based-auth).
        let request = Request {
            method: "GET",
            url: reqwest::Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").unwrap(),
            canonical_uri: "/test.txt".into(),
            canonical_query: String::new(),
            headers: vec![
                ("host".into(), "examplebucket.s3.amazonaws.com".into()),
                ("range".into(), "bytes=0-9".into()),
                ("x-amz-content-sha256".into(), EMPTY_SHA256.into()),
                ("x-amz-date".into(), "20130524T000000Z".into()),
            ],
            payload_sha256: EMPTY_SHA256.into(),
            amz_date: "20130524T000000Z".into(),
        };
        let key = Key {
            id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            token: None,
        };
        assert_eq!(
            request.authorization(&key, "us-east-1", "s3"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn the_object_lock_request_is_signed_with_its_query_and_token() {
        let url = reqwest::Url::parse("http://127.0.0.1:9000/my-bucket").unwrap();
        let r = Request::get_object_lock(&url, "2026-11-30T20:15:23Z").unwrap();
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:9000/my-bucket?object-lock"
        );
        assert_eq!(
            (r.canonical_uri.as_str(), r.canonical_query.as_str()),
            ("/my-bucket", "object-lock=")
        );
        assert_eq!(r.amz_date, "20261130T201523Z");
        assert_eq!(r.headers[0], ("host".into(), "127.0.0.1:9000".into()));
        let key = Key {
            token: Some("TOKEN"),
            ..SUITE
        };
        let headers = r.signed_headers(&key, "eu-west-1", "s3");
        let auth = &headers.last().unwrap().1;
        assert!(
            auth.contains("/20261130/eu-west-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="),
            "{auth}"
        );
        assert!(!auth.contains(SUITE.secret));
        let https = reqwest::Url::parse("https://s3.us-east-1.amazonaws.com/b").unwrap();
        let r = Request::get_object_lock(&https, "2026-11-30T20:15:23Z").unwrap();
        assert_eq!(r.headers[0].1, "s3.us-east-1.amazonaws.com");
    }

    #[test]
    fn answers_are_read_and_hostile_ones_refused() {
        let enabled = |rule: &str| {
            format!(
                "<?xml version=\"1.0\"?><ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled>{rule}</ObjectLockConfiguration>"
            )
        };
        let rule =
            |inner: &str| format!("<Rule><DefaultRetention>{inner}</DefaultRetention></Rule>");
        let lock = parse_answer(
            200,
            &enabled(&rule("<Mode>COMPLIANCE</Mode><Days>30</Days>")),
        )
        .unwrap();
        assert_eq!(lock.describe(), "bucket default COMPLIANCE 30 days");
        let lock = parse_answer(
            200,
            &enabled(&rule(
                "<Mode>GOVERNANCE</Mode><Days>0</Days><Years>1</Years>",
            )),
        )
        .unwrap();
        assert_eq!(lock.describe(), "bucket default GOVERNANCE 1 year");
        let BucketLock::Default(r) = lock else {
            panic!()
        };
        assert_eq!(r.max_days(), 366);
        assert_eq!(
            parse_answer(200, &enabled("")).unwrap(),
            BucketLock::NoDefault
        );
        assert_eq!(
            parse_answer(
                404,
                "<Error><Code>ObjectLockConfigurationNotFoundError</Code></Error>"
            )
            .unwrap(),
            BucketLock::Disabled
        );
        assert!(
            parse_answer(403, "<Error><Code>AccessDenied</Code></Error>")
                .unwrap_err()
                .contains("no permission")
        );
        assert!(
            parse_answer(500, "<Error><Code>InternalError</Code></Error>")
                .unwrap_err()
                .contains("500 (InternalError)")
        );
        for bad in [
            rule("<Mode>LEGAL</Mode><Days>3</Days>"),
            rule("<Mode>COMPLIANCE</Mode><Days>0</Days><Years>0</Years>"),
            rule("<Mode>COMPLIANCE</Mode><Days>-3</Days>"),
            rule("<Mode>COMPLIANCE</Mode><Days>99999999999</Days>"),
            rule("<Mode>COMPLIANCE</Mode><Days>1</Days><Years>1</Years>"),
            rule("<Mode>COMPLIANCE</Mode>"),
        ] {
            assert!(parse_answer(200, &enabled(&bad)).is_err(), "{bad}");
        }
    }
}
