//! The job file's `signers` and `signers_file` (in a job or `[defaults]`): the keys a
//! job's scheduled verify requires its archives to be signed by, named as `verify --signer
//! KEY.pub` and `--signers FILE` name them. Only the paths are checked here; the keys are
//! loaded when the job is resolved (`JobFile::resolve`), where a missing or bad file is
//! reported at its line.

use toml::Spanned;

use super::{Ctx, SpannedList};
use crate::job::config::{Located, SignerFiles};

/// The two raw keys of one table.
pub(super) struct RawSigners<'a> {
    pub(super) signers: Option<&'a SpannedList>,
    pub(super) signers_file: Option<&'a Spanned<String>>,
}

impl RawSigners<'_> {
    fn is_set(&self) -> bool {
        self.signers.is_some() || self.signers_file.is_some()
    }
}

/// The signer files of one table (`[defaults]` or a job).
fn check(cx: &mut Ctx<'_>, raw: &RawSigners<'_>, section: &Option<String>) -> SignerFiles {
    let mut path = |key: &str, s: &Spanned<String>| {
        if s.get_ref().is_empty() {
            cx.err(s.span().start, section.clone(), key, "empty path", None);
            return None;
        }
        if s.get_ref().starts_with("s3://") {
            cx.err(
                s.span().start,
                section.clone(),
                key,
                "a signer key file must be a local file",
                Some("copy the .pub next to the job file"),
            );
            return None;
        }
        Some(cx.located_path(s))
    };
    let keys: Vec<Located<_>> = raw
        .signers
        .map(|list| {
            list.get_ref()
                .iter()
                .filter_map(|s| path("signers", s))
                .collect()
        })
        .unwrap_or_default();
    let file = raw.signers_file.and_then(|s| path("signers_file", s));
    SignerFiles { keys, file }
}

/// The signer files of `[defaults]`.
pub(super) fn defaults(cx: &mut Ctx<'_>, raw: &RawSigners<'_>) -> SignerFiles {
    check(cx, raw, &Some("[defaults]".to_string()))
}

/// A job's signer files. The pin is one set: a job that sets `signers` or `signers_file`
/// replaces both keys of `[defaults]` (like a job's `recipients`), so `signers = []` in a
/// job pins nothing for it.
pub(super) fn job(
    cx: &mut Ctx<'_>,
    defaults: &SignerFiles,
    raw: &RawSigners<'_>,
    section: &Option<String>,
) -> SignerFiles {
    if raw.is_set() {
        check(cx, raw, section)
    } else {
        defaults.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::test_support::{JOB, parse};

    #[test]
    fn a_jobs_signers_replace_both_default_keys() {
        let f = parse(&format!(
            "[defaults]\nsigners = [\"keys/a.pub\", \"/k/b.pub\"]\nsigners_file = \"allowed\"\n{JOB}[job.etc]\nsources = [\"/etc\"]\ndestination = \"/c\"\nrecipients = [\"/k.pub\"]\nsigners_file = \"etc-signers\"\n[job.tmp]\nsources = [\"/tmp\"]\ndestination = \"/t\"\nrecipients = [\"/k.pub\"]\nsigners = []\n"
        ))
        .unwrap();
        let (etc, home, tmp) = (&f.jobs[0].signers, &f.jobs[1].signers, &f.jobs[2].signers);
        let paths: Vec<(&str, PathBuf, usize)> = home
            .files()
            .map(|(k, l)| (k, l.value.clone(), l.line))
            .collect();
        assert_eq!(
            paths,
            [
                ("signers", PathBuf::from("/etc/coffer/keys/a.pub"), 2),
                ("signers", PathBuf::from("/k/b.pub"), 2),
                ("signers_file", PathBuf::from("/etc/coffer/allowed"), 3),
            ]
        );
        assert!(etc.keys.is_empty());
        assert_eq!(
            etc.file.as_ref().unwrap().value,
            Path::new("/etc/coffer/etc-signers")
        );
        assert!(tmp.is_empty());
    }

    #[test]
    fn bad_signer_paths_name_their_line_and_key() {
        let err = parse(&format!(
            "{JOB}signers = [\"a.pub\", \"\"]\nsigners_file = \"s3://bucket/signers\"\n"
        ))
        .unwrap_err();
        for want in [
            "jobs.toml:5: job \"home\": key \"signers\": empty path",
            "jobs.toml:6: job \"home\": key \"signers_file\": a signer key file must be a local file",
        ] {
            assert!(err.contains(want), "{want}\n in: {err}");
        }
        let err = parse(&format!("{JOB}signers = \"a.pub\"\n")).unwrap_err();
        assert!(
            err.contains("jobs.toml:5") && err.contains("signers"),
            "{err}"
        );
    }
}
