//! S3 Object Lock on the moto server (bucket `coffer-lock`, made with Object Lock enabled):
//! archives uploaded with `--object-lock` carry that retention (single PutObject and
//! multipart uploads), and `prune` keeps an archive still locked, says until when, and
//! stays green.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::job_common::World;
use crate::s3_storage::{Server, server};

const LOCK_BUCKET: &str = "coffer-lock";

/// `MODE RETAIN-UNTIL` of an object in the lock bucket, read with boto3 as admin.
fn retention(s3: &Server, key: &str) -> String {
    retention_in(s3, LOCK_BUCKET, key)
}

/// `MODE RETAIN-UNTIL` of an object in `bucket`, read with boto3 as admin.
pub(crate) fn retention_in(s3: &Server, bucket: &str, key: &str) -> String {
    let script = "import boto3,sys\n\
c=boto3.client('s3',endpoint_url=sys.argv[1],region_name='us-east-1',aws_access_key_id=sys.argv[2],aws_secret_access_key=sys.argv[3])\n\
r=c.head_object(Bucket=sys.argv[4],Key=sys.argv[5])\n\
print(r['ObjectLockMode'], r['ObjectLockRetainUntilDate'].strftime('%Y-%m-%d'))";
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &s3.endpoint,
            &s3.admin.key,
            &s3.admin.secret,
            bucket,
            key,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The UTC date `days` from now, as S3 reports a retention date.
pub(crate) fn date_in(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    coffer::storage::s3::rfc3339_utc(now + days * 86_400)[..10].to_string()
}

#[test]
fn copies_are_uploaded_with_the_retention_asked_for() {
    let Some(s3) = server() else { return };
    let t = TestDir::new();
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    write_file(&src.join("small.txt"), b"small", 0o644);
    std::fs::create_dir(t.join("a")).unwrap();
    let backup = |dir: &Path| {
        coffer_cmd()
            .arg("backup")
            .arg(&src)
            .arg("--to")
            .arg(dir)
            .arg("-r")
            .arg(alice_pub())
            .arg("-q")
            .assert()
            .success();
    };
    backup(&t.join("a"));
    // A second archive over one 8 MiB part: a multipart upload.
    write_file(&src.join("big.bin"), &pseudo_random(9 << 20, 5), 0o644);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    backup(&t.join("a"));
    let mut archives: Vec<_> = std::fs::read_dir(t.join("a"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    archives.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    assert!(std::fs::metadata(&archives[1]).unwrap().len() > 8 << 20);

    s3.coffer(&s3.admin)
        .arg("copy")
        .args(&archives)
        .args([
            "--to",
            &format!("s3://{LOCK_BUCKET}/copies"),
            "--object-lock",
            "governance:2",
            "-q",
        ])
        .assert()
        .success();
    let key = |a: &Path| format!("copies/{}", a.file_name().unwrap().to_str().unwrap());
    let r = retention(s3, &key(&archives[0]));
    assert!(
        r == format!("GOVERNANCE {}", date_in(2)) || r == format!("GOVERNANCE {}", date_in(3)),
        "{r}"
    );
    // The multipart upload went through with the lock headers on CreateMultipartUpload and
    // checksums on every part. moto 5.2.5 drops those headers (its create_multipart_upload
    // takes no lock arguments), so its retention cannot be read back here; the object must
    // still be whole.
    let big = s3.admin_store_of(LOCK_BUCKET, &key(&archives[1]));
    assert!(big == std::fs::read(&archives[1]).unwrap());

    // A backup straight to S3 takes the flag too; a folder cannot hold a lock.
    // (A small source: one PutObject, whose retention moto keeps.)
    s3.coffer(&s3.admin)
        .arg("backup")
        .arg(src.join("small.txt"))
        .args([
            "-o",
            &format!("s3://{LOCK_BUCKET}/direct.coffer"),
            "--object-lock",
            "compliance:1",
            "-q",
        ])
        .arg("-r")
        .arg(alice_pub())
        .assert()
        .success();
    assert!(retention(s3, "direct.coffer").starts_with("COMPLIANCE "));
    coffer_cmd()
        .arg("copy")
        .arg(&archives[0])
        .arg("--to")
        .arg(t.join("a"))
        .args(["--object-lock", "compliance:1"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("s3:// destinations"));
}

#[test]
fn prune_keeps_locked_archives_says_until_when_and_stays_green() {
    let Some(s3) = server() else { return };
    let w = World::new();
    let tree = w.small_tree("src");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\
         [s3]\nobject_lock = {{ mode = \"governance\", days = 1 }}\n\
         [job.home]\nsources = [{tree:?}]\ndestination = \"s3://{LOCK_BUCKET}/jobs\"\nretention = {{ keep_last = 1 }}\n"
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
    run(&["job", "run", "home", "-q"]).assert().success();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    run(&["job", "run", "home", "-q"]).assert().success();
    let rows = w.sessions("home");
    assert_eq!(rows.len(), 2);
    let oldest = rows.iter().min_by_key(|r| r.started_at_ms).unwrap();
    let oldest_key = oldest
        .archive
        .as_ref()
        .unwrap()
        .to_str()
        .unwrap()
        .strip_prefix(&format!("s3://{LOCK_BUCKET}/"))
        .unwrap()
        .to_string();
    assert!(retention(s3, &oldest_key).starts_with("GOVERNANCE "));

    let out = run(&["prune", "--json"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = &doc["jobs"][0];
    assert!(job["failed"].as_array().unwrap().is_empty(), "{doc}");
    let row = job["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == oldest.id)
        .unwrap();
    assert_eq!(row["keep"], false, "{doc}");
    assert_eq!(row["deleted"], false, "{doc}");
    assert!(
        row["locked_until"]
            .as_str()
            .unwrap()
            .starts_with(&date_in(1)[..4]),
        "{doc}"
    );

    // The object is still there and readable; the text form says until when.
    run(&["info", oldest.archive.as_ref().unwrap().to_str().unwrap()])
        .assert()
        .success();
    run(&["prune"])
        .assert()
        .success()
        .stdout(predicates::str::contains("Object Lock holds it until"));
}
