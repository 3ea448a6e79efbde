//! A job's own `object_lock`, through the binary and the moto server: the job's archives
//! are uploaded with its retention, in place of `[s3]`'s; a job asking for one with a local
//! destination is refused at its line.

use crate::job_common::World;
use crate::object_lock::{date_in, retention_in};
use crate::s3_storage::server;
use predicates::prelude::*;

#[test]
fn a_jobs_object_lock_is_the_retention_of_its_uploads() {
    let Some(s3) = server() else { return };
    let w = World::new();
    let tree = w.small_tree("src");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\n\
         [s3]\nobject_lock = {{ mode = \"compliance\", days = 1 }}\n\
         [job.home]\nsources = [{tree:?}]\ndestination = \"s3://coffer-lock/own\"\n\
         object_lock = {{ mode = \"governance\", days = 2 }}\n"
    ));
    w.coffer()
        .env("AWS_ENDPOINT_URL", &s3.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", &s3.admin.key)
        .env("AWS_SECRET_ACCESS_KEY", &s3.admin.secret)
        .args(["job", "run", "home"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "object lock: GOVERNANCE 2 days (set on upload)",
        ));
    let archive = w.sessions("home")[0].archive.clone().unwrap();
    let key = archive
        .to_str()
        .unwrap()
        .strip_prefix("s3://coffer-lock/")
        .unwrap()
        .to_string();
    let r = retention_in(s3, "coffer-lock", &key);
    assert!(
        r == format!("GOVERNANCE {}", date_in(2)) || r == format!("GOVERNANCE {}", date_in(3)),
        "{r}"
    );
}

#[test]
fn object_lock_with_a_local_destination_is_a_config_error() {
    let w = World::new();
    let tree = w.small_tree("src");
    let dest = w.mkdir("dest");
    w.write_config(&format!(
        "[defaults]\nrecipients = [\"{{KEY}}\"]\nobject_lock = {{ mode = \"compliance\", days = 30 }}\n\
         [job.home]\nsources = [{tree:?}]\ndestination = {dest:?}\n\
         [job.pinned]\nsources = [{tree:?}]\ndestination = {:?}\n\
         object_lock = {{ mode = \"compliance\", days = 30 }}\n",
        w.mkdir("dest2")
    ));
    w.coffer()
        .args(["job", "check"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "jobs.toml:10: job \"pinned\": key \"object_lock\": object_lock needs an s3:// destination",
        ))
        .stderr(predicate::str::contains("job \"home\"").not());
}
