//! S3 Object Lock: the retention every archive object is written with when a destination
//! asks for it (`[s3] object_lock = { mode = "compliance", days = 30 }`, `--object-lock`).
//!
//! The retention goes on the request that makes the object, as S3 wants it: the
//! `x-amz-object-lock-mode` and `x-amz-object-lock-retain-until-date` headers on PutObject
//! and on CreateMultipartUpload (never on UploadPart or CompleteMultipartUpload, which S3
//! may refuse them on). `object_store` has no per-request header option, so the sink makes
//! those two requests through a client whose default headers carry the retention (they are
//! signed with the request) and the parts through a plain one; the upload id is the
//! bucket's, valid from either. S3 also wants an integrity checksum on a locked upload: both
//! clients send SHA-256 checksums.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Object Lock mode: `compliance` (nobody, root included, can shorten it or delete the
/// object) or `governance` (users with s3:BypassGovernanceRetention can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    Compliance,
    Governance,
}

/// The retention asked for: each object is locked for `days` from its upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub days: u32,
}

/// Longer than any retention a backup needs; keeps the date arithmetic far from overflow.
const MAX_DAYS: u32 = 36_500;

impl ObjectLock {
    /// `MODE:DAYS`, as the command line writes it (`compliance:30`).
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidOption(format!(
                "--object-lock {text:?}: expected MODE:DAYS, MODE compliance or governance (e.g. compliance:30)"
            ))
        };
        let (mode, days) = text.split_once(':').ok_or_else(bad)?;
        let mode = match mode {
            "compliance" => LockMode::Compliance,
            "governance" => LockMode::Governance,
            _ => return Err(bad()),
        };
        let lock = ObjectLock {
            mode,
            days: days.parse().map_err(|_| bad())?,
        };
        lock.check()?;
        Ok(lock)
    }

    pub fn check(&self) -> Result<()> {
        if self.days == 0 || self.days > MAX_DAYS {
            return Err(Error::InvalidOption(format!(
                "object_lock days = {}: must be 1 to {MAX_DAYS}",
                self.days
            )));
        }
        Ok(())
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }

    /// When an object uploaded at `from` (seconds since the epoch) may go.
    pub fn until(&self, from: i64) -> i64 {
        from + i64::from(self.days) * 86_400
    }

    /// The two headers for an upload starting now.
    pub(super) fn headers(&self) -> Result<reqwest::header::HeaderMap> {
        use reqwest::header::{HeaderMap, HeaderValue};
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| Error::Internal(format!("clock before 1970: {e}")))?
            .as_secs() as i64;
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-object-lock-mode",
            HeaderValue::from_static(self.mode_name()),
        );
        let until = HeaderValue::from_str(&rfc3339_utc(self.until(now)))
            .map_err(|e| Error::Internal(format!("lock date header: {e}")))?;
        h.insert("x-amz-object-lock-retain-until-date", until);
        h.extend(checksum_headers());
        Ok(h)
    }
}

/// What S3 (and moto) look for to accept an upload that Object Lock holds (its own
/// retention or the bucket's default): the checksum the client sends (object_store's
/// x-amz-checksum-sha256, configured in `connect_with`).
pub(super) fn checksum_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        "x-amz-sdk-checksum-algorithm",
        reqwest::header::HeaderValue::from_static("SHA256"),
    );
    h
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch (UTC; the s3 feature builds without
/// chrono). Days to civil date after Howard Hinnant's `civil_from_days`.
pub fn rfc3339_utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(rfc3339_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn command_line_form_parses_and_bad_ones_are_refused() {
        assert_eq!(
            ObjectLock::parse("compliance:30").unwrap(),
            ObjectLock {
                mode: LockMode::Compliance,
                days: 30
            }
        );
        assert_eq!(
            ObjectLock::parse("governance:1").unwrap().mode,
            LockMode::Governance
        );
        for bad in [
            "compliance",
            "legal:3",
            "compliance:0",
            "governance:x",
            ":5",
        ] {
            assert!(ObjectLock::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ObjectLock::parse("compliance:2").unwrap().until(10),
            10 + 2 * 86_400
        );
    }
}
