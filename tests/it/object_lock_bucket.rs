//! A bucket's default Object Lock retention, on the moto server: `backup` and `copy` to S3
//! without a retention of their own report what the bucket gives every new object (read
//! with GetObjectLockConfiguration), "none" for a bucket without Object Lock, and "unknown"
//! for a key that may not read the configuration, which never fails the backup; `prune`
//! keeps what the bucket's default still locks.

use std::process::Command;

use crate::common::*;
use crate::job_common::World;
use crate::object_lock::{date_in, retention_in};
use crate::s3_storage::{Server, server};

/// Make `bucket` with Object Lock enabled and, with `default`, a default retention
/// (`(MODE, DAYS)`), as admin with boto3.
fn make_bucket(s3: &Server, bucket: &str, default: Option<(&str, u32)>) {
    let script = "import boto3,sys\n\
c=boto3.client('s3',endpoint_url=sys.argv[1],region_name='us-east-1',aws_access_key_id=sys.argv[2],aws_secret_access_key=sys.argv[3])\n\
c.create_bucket(Bucket=sys.argv[4],ObjectLockEnabledForBucket=True)\n\
if sys.argv[5]: c.put_object_lock_configuration(Bucket=sys.argv[4],ObjectLockConfiguration={'ObjectLockEnabled':'Enabled','Rule':{'DefaultRetention':{'Mode':sys.argv[5],'Days':int(sys.argv[6])}}})\n";
    let (mode, days) = default.unwrap_or(("", 0));
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &s3.endpoint,
            &s3.admin.key,
            &s3.admin.secret,
            bucket,
            mode,
            &days.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn backup_and_copy_report_the_buckets_default_retention() {
    let Some(s3) = server() else { return };
    make_bucket(s3, "coffer-default-30", Some(("COMPLIANCE", 30)));
    make_bucket(s3, "coffer-lock-no-default", None);
    let t = TestDir::new();
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    write_file(&src.join("a.txt"), b"locked by the bucket", 0o644);
    let backup = |who, url: &str, json_out: bool| {
        let mut c = s3.coffer(who);
        c.arg("backup")
            .arg(&src)
            .args(["-o", url])
            .arg("-r")
            .arg(alice_pub());
        if json_out {
            c.arg("--json");
        }
        c.output().unwrap()
    };

    // Default retention: stated, and S3 took the upload (it wants a checksum on it).
    let doc = json(&backup(&s3.admin, "s3://coffer-default-30/a.coffer", true));
    assert_eq!(
        doc["object_lock"], "bucket default COMPLIANCE 30 days",
        "{doc}"
    );
    let r = retention_in(s3, "coffer-default-30", "a.coffer");
    assert!(
        r == format!("COMPLIANCE {}", date_in(30)) || r == format!("COMPLIANCE {}", date_in(31)),
        "{r}"
    );
    let out = backup(&s3.admin, "s3://coffer-default-30/b.coffer", false);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("object lock: bucket default COMPLIANCE 30 days"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // No default, no Object Lock at all.
    let doc = json(&backup(
        &s3.admin,
        "s3://coffer-lock-no-default/a.coffer",
        true,
    ));
    assert_eq!(
        doc["object_lock"],
        "none (Object Lock is enabled on the bucket, without a default retention)"
    );
    let doc = json(&backup(&s3.admin, &s3.url("no-lock.coffer"), true));
    assert_eq!(
        doc["object_lock"],
        "none (Object Lock is not enabled on the bucket)"
    );
    // A write-only key may not ask: said, and the backup succeeds.
    let doc = json(&backup(&s3.writer, &s3.url("writer.coffer"), true));
    assert_eq!(
        doc["object_lock"],
        "unknown (no permission to read the bucket's Object Lock configuration)"
    );
    // An explicit retention is what the archive gets, whatever the bucket's default.
    let mut c = s3.coffer(&s3.admin);
    c.arg("backup")
        .arg(&src)
        .args([
            "-o",
            "s3://coffer-default-30/c.coffer",
            "--object-lock",
            "compliance:2",
        ])
        .arg("-r")
        .arg(alice_pub())
        .arg("--json");
    let doc = json(&c.output().unwrap());
    assert_eq!(doc["object_lock"], "COMPLIANCE 2 days (set on upload)");

    // A local folder says nothing about locks.
    let local = t.join("local.coffer");
    let out = coffer_cmd()
        .arg("backup")
        .arg(&src)
        .arg("-o")
        .arg(&local)
        .arg("-r")
        .arg(alice_pub())
        .arg("--json")
        .output()
        .unwrap();
    assert!(json(&out)["object_lock"].is_null());

    // copy: the same report for its destination.
    let out = s3
        .coffer(&s3.admin)
        .arg("copy")
        .arg(&local)
        .args(["--to", "s3://coffer-default-30/copies", "--json"])
        .output()
        .unwrap();
    let doc = json(&out);
    assert_eq!(doc["copied"], 1, "{doc}");
    assert_eq!(doc["object_lock"], "bucket default COMPLIANCE 30 days");
}

#[test]
fn prune_keeps_what_the_buckets_default_retention_locks() {
    let Some(s3) = server() else { return };
    make_bucket(s3, "coffer-default-prune", Some(("GOVERNANCE", 3)));
    let w = World::new();
    let tree = w.small_tree("src");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\
         [job.home]\nsources = [{tree:?}]\ndestination = \"s3://coffer-default-prune/jobs\"\nretention = {{ keep_last = 1 }}\n"
    ));
    let run = |args: &[&str]| {
        let mut c = w.coffer();
        c.env("AWS_ENDPOINT_URL", &s3.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", &s3.admin.key)
            .env("AWS_SECRET_ACCESS_KEY", &s3.admin.secret)
            .args(args);
        c
    };
    run(&["job", "run", "home"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "object lock: bucket default GOVERNANCE 3 days",
        ));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run(&["job", "run", "home", "-q"]).assert().success();
    let rows = w.sessions("home");
    let oldest = rows.iter().min_by_key(|r| r.started_at_ms).unwrap();
    let out = run(&["prune", "--json"]).output().unwrap();
    let doc = json(&out);
    let job = &doc["jobs"][0];
    assert!(job["failed"].as_array().unwrap().is_empty(), "{doc}");
    let row = job["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == oldest.id)
        .unwrap();
    assert_eq!(
        (&row["keep"], &row["deleted"]),
        (&false.into(), &false.into()),
        "{doc}"
    );
    let until = row["locked_until"].as_str().unwrap();
    assert!(
        until.starts_with(&date_in(3)) || until.starts_with(&date_in(4)),
        "{doc}"
    );
    // Still there, not hidden behind a delete marker.
    run(&["info", oldest.archive.as_ref().unwrap().to_str().unwrap()])
        .assert()
        .success();
}
