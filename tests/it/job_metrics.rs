//! `coffer metrics` through the binary: the output is valid Prometheus text exposition
//! format (checked by a small parser here; promtool is not needed), the values follow the
//! sessions, `--textfile` writes the file, and the daemon rewrites `metrics_textfile`
//! after its sessions.

use crate::job_common::*;
use std::collections::BTreeMap;

/// One sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parse the text exposition format strictly enough to catch what promtool would: every
/// sample's family has HELP and TYPE lines before its samples, names and label names are
/// valid, label values are correctly escaped, values are floats, no sample is repeated.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut help = BTreeMap::new();
    let mut types = BTreeMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP has a text");
            assert!(name_ok(name) && !doc.is_empty(), "{line}");
            assert!(
                help.insert(name.to_string(), ()).is_none(),
                "HELP twice: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "{line}"
            );
            assert!(types.insert(name.to_string(), ty.to_string()).is_none());
            assert!(
                !samples.iter().any(|s| s.0 == name),
                "TYPE after samples: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        assert!(name_ok(name), "{line}");
        assert!(
            types.contains_key(name) && help.contains_key(name),
            "no TYPE/HELP: {line}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(l) = rest.strip_prefix('{') {
            let mut chars = l.char_indices();
            let mut key = String::new();
            loop {
                let (_, c) = chars.next().expect("unterminated labels");
                match c {
                    '}' => break,
                    ',' if key.is_empty() => {}
                    '=' => {
                        assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().expect("unterminated value").1 {
                                '"' => break,
                                '\\' => match chars.next().unwrap().1 {
                                    'n' => value.push('\n'),
                                    c @ ('\\' | '"') => value.push(c),
                                    c => panic!("bad escape \\{c} in {line}"),
                                },
                                '\n' => panic!("raw newline"),
                                c => value.push(c),
                            }
                        }
                        assert!(name_ok(&key), "label name {key:?}");
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            rest = chars.as_str();
        }
        let value = rest.strip_prefix(' ').expect("one space before the value");
        let value = value.split(' ').next().unwrap();
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value {value:?}: {line}"));
        assert!(
            !samples.iter().any(|s| s.0 == name && s.1 == labels),
            "repeated sample: {line}"
        );
        samples.push((name.to_string(), labels, v));
    }
    samples
}

fn value(samples: &[Sample], name: &str, job: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s.0 == name && s.1.get("job").map(String::as_str) == Some(job))
        .map(|s| s.2)
}

fn metrics(w: &World) -> Vec<Sample> {
    let out = w.coffer().arg("metrics").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_exposition(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn the_parser_refuses_bad_exposition_text() {
    let ok = "# HELP a_b x\n# TYPE a_b gauge\na_b{job=\"q\\\"\\\\\\n\"} 1.5\n";
    let s = parse_exposition(ok);
    assert_eq!(s[0].1["job"], "q\"\\\n");
    for bad in [
        "a_b 1\n",                                              // no TYPE
        "# HELP a_b x\n# TYPE a_b gauge\na_b{job=\"\\q\"} 1\n", // bad escape
        "# HELP a_b x\n# TYPE a_b gauge\na_b one\n",            // not a number
        "# HELP a_b x\n# TYPE a_b gauge\na_b 1\na_b 2\n",       // repeated
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(bad)).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn metrics_parse_and_follow_the_sessions() {
    let w = World::new();
    let src = w.small_tree("src");
    let dest = w.mkdir("dest");
    let prom = w.mkdir("textfile").join("coffer.prom");
    w.write_config(&format!(
        "metrics_textfile = {prom:?}\n[defaults]\nrecipients = [\"{{KEY}}\"]\n\n[job.home]\nsources = [{src:?}]\ndestination = {dest:?}\nschedule = \"* * * * *\"\n"
    ));
    // Before any session: the last success is 0 (so the age alert fires), no session yet.
    let before = metrics(&w);
    assert_eq!(
        value(&before, "coffer_last_success_timestamp_seconds", "home"),
        Some(0.0)
    );
    assert_eq!(value(&before, "coffer_restore_points", "home"), Some(0.0));
    assert_eq!(value(&before, "coffer_session_bytes", "home"), None);
    assert_eq!(
        value(&before, "coffer_last_verify_ok", "home"),
        None,
        "never verified"
    );
    let hash = value(&before, "coffer_recipients_hash", "home").unwrap();
    assert!(hash > 0.0 && hash < 2f64.powi(48) && hash.fract() == 0.0);

    w.coffer().args(["job", "run", "home"]).assert().success();
    let one = metrics(&w);
    let t1 = value(&one, "coffer_last_success_timestamp_seconds", "home").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 120.0..=now + 1.0).contains(&t1), "{t1} vs {now}");
    assert_eq!(value(&one, "coffer_restore_points", "home"), Some(1.0));
    let bytes = value(&one, "coffer_session_bytes", "home").unwrap();
    let archive = &w.sessions("home")[0];
    assert_eq!(bytes as u64, archive.bytes_written.unwrap());
    assert!(bytes > 70_000.0, "{bytes}");
    assert_eq!(value(&one, "coffer_session_warnings", "home"), Some(0.0));
    assert!(value(&one, "coffer_session_duration_seconds", "home").unwrap() >= 0.0);
    assert_eq!(value(&one, "coffer_job_health", "home"), Some(0.0));
    assert_eq!(value(&one, "coffer_recipients_hash", "home"), Some(hash));

    // The daemon rewrites the configured textfile after its session.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.coffer().args(["daemon", "--once"]).assert().success();
    let text = std::fs::read_to_string(&prom).expect("the daemon wrote the textfile");
    let two = parse_exposition(&text);
    assert_eq!(value(&two, "coffer_restore_points", "home"), Some(2.0));
    let t2 = value(&two, "coffer_last_success_timestamp_seconds", "home").unwrap();
    assert!(t2 > t1, "{t2} > {t1}");
    assert_eq!(
        w.files(prom.parent().unwrap()),
        ["coffer.prom"],
        "no temporary file left beside it"
    );

    // `--textfile` writes the same text as stdout.
    let out = w.join("out.prom");
    w.coffer()
        .args(["metrics", "--textfile", out.to_str().unwrap()])
        .assert()
        .success()
        .stdout("");
    assert_eq!(
        parse_exposition(&std::fs::read_to_string(&out).unwrap()),
        metrics(&w)
    );
}
