//! The `retention` and `copy_retention` keys of a job file: their TOML shape and the one
//! check both share (a policy that keeps nothing is an error at the key's line).

use serde::Deserialize;
use toml::Spanned;

use super::Ctx;
use crate::job::retention::Retention;

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    keep_last: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
}

impl From<RawRetention> for Retention {
    fn from(r: RawRetention) -> Self {
        Retention {
            keep_last: r.keep_last.unwrap_or(0),
            keep_daily: r.keep_daily.unwrap_or(0),
            keep_weekly: r.keep_weekly.unwrap_or(0),
            keep_monthly: r.keep_monthly.unwrap_or(0),
        }
    }
}

pub(super) fn check_retention(
    cx: &mut Ctx<'_>,
    r: &Spanned<RawRetention>,
    section: &Option<String>,
) -> Option<Retention> {
    retention_of(cx, r, section, "retention", "every archive")
}

/// The policy of retention key `key` (`retention`, `copy_retention`), or an error when it
/// keeps nothing; without the key, `kept` is what stays.
pub(super) fn retention_of(
    cx: &mut Ctx<'_>,
    r: &Spanned<RawRetention>,
    section: &Option<String>,
    key: &'static str,
    kept: &str,
) -> Option<Retention> {
    let policy = Retention::from(*r.get_ref());
    if policy.is_empty() {
        cx.err(
            r.span().start,
            section.clone(),
            key,
            format!("{key} keeps nothing (every keep_* is 0 or missing)"),
            Some(&format!(
                "set keep_last, keep_daily, keep_weekly or keep_monthly above 0, or remove {key} to keep {kept}"
            )),
        );
        return None;
    }
    Some(policy)
}
