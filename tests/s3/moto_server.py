#!/usr/bin/env python3
"""Local S3-compatible test server for coffer's S3 integration tests.

Starts moto's server (S3 + IAM, in-process, wired like ThreadedMotoServer)
on 127.0.0.1 with IAM-like access control ENFORCED, creates the bucket `coffer-test` and three IAM users with access
keys, prints ONE line of JSON to stdout, then serves until stdin reaches EOF
or the process gets SIGTERM/SIGINT.

Usage:  python3 tests/s3/moto_server.py [PORT]      (PORT 0 or absent = pick a free port)
Needs:  pip install 'moto[server]==5.2.5'           (exit 3 if missing; 1 if port busy)

Output line (single line, keys in this order):
  {"endpoint":"http://127.0.0.1:PORT","region":"us-east-1","bucket":"coffer-test",
   (also a bucket `coffer-lock` with Object Lock enabled, for the admin user)
   "admin":{"key":..,"secret":..},"writer":{..},"reader":{..}}

Users:
  admin   s3:* on *
  writer  s3:PutObject, s3:AbortMultipartUpload, s3:ListMultipartUploadParts
          on arn:aws:s3:::coffer-test/*   (no Get/Head/List/Delete)
  reader  s3:GetObject on arn:aws:s3:::coffer-test/*, s3:ListBucket on arn:aws:s3:::coffer-test

Notes for the spawning side (Rust test):
  * spawn with stdin = piped and keep the ChildStdin alive for as long as the
    server is needed; dropping it (or the test process dying) stops the server.
    An inherited /dev/null stdin (e.g. under CI) would stop it at once.
  * only the JSON line is written to stdout; per-request logging is silenced,
    so stderr carries only errors (still: inherit or drain it, don't leave a
    full pipe).
  * use path-style addressing (virtual_hosted_style_request=false) and plain
    http (AWS_ALLOW_HTTP=true).
"""

import json
import logging
import os
import signal
import sys
import threading

REGION = "us-east-1"
BUCKET = "coffer-test"
LOCK_BUCKET = "coffer-lock"
INSTALL_HINT = "pip install 'moto[server]==5.2.5'"


def _die(code: int, msg: str) -> "NoReturn":  # noqa: F821
    sys.stderr.write(f"moto_server.py: {msg}\n")
    sys.stderr.flush()
    sys.exit(code)


def _parse_port(argv: list) -> int:
    if len(argv) > 2:
        _die(2, "usage: moto_server.py [PORT]   (0 or absent = pick a free port)")
    if len(argv) == 2:
        try:
            port = int(argv[1])
        except ValueError:
            _die(2, f"bad port {argv[1]!r}")
        if not 0 <= port <= 65535:
            _die(2, f"bad port {port}")
        return port
    return 0


def _policy(statements: list) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


USERS = {
    "admin": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
    ],
    "writer": [
        {
            "Effect": "Allow",
            "Action": [
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        },
    ],
    "reader": [
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        },
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": f"arn:aws:s3:::{BUCKET}",
        },
    ],
}


def main() -> int:
    port = _parse_port(sys.argv)

    # Keep the caller's AWS configuration from leaking into our setup client.
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_IAM"):
        os.environ.pop(var, None)
    no_proxy = os.environ.get("NO_PROXY", "")
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(
        p for p in (no_proxy, "127.0.0.1", "localhost") if p
    )
    # Everything on the server side lives in one account / region.
    os.environ.setdefault("MOTO_ACCOUNT_ID", "123456789012")

    try:
        import boto3
        from botocore.config import Config
        from moto import settings as moto_settings
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server
        import flask  # noqa: F401  (moto's server extra)
    except ImportError as exc:
        _die(3, f"moto server mode is not installed ({exc}); run: {INSTALL_HINT}")

    # Per-request access logs would go to stderr; a caller that pipes stderr
    # without reading it could otherwise block the server once the pipe fills.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    # Phase 1: no auth while we set things up (moto's IAM-like access control
    # is off while the request counter is below INITIAL_NO_AUTH_ACTION_COUNT).
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")

    # Same wiring as moto's ThreadedMotoServer, but the socket is bound here in
    # the main thread so that a busy port fails fast (ThreadedMotoServer.start()
    # would wait forever if the bind fails in its thread).
    try:
        server = make_server(
            "127.0.0.1", port, DomainDispatcherApplication(create_backend_app),
            threaded=True, request_handler=MotoRequestHandler,
        )
    except OSError as exc:
        _die(1, f"cannot bind 127.0.0.1:{port}: {exc}")
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"

    try:
        session = boto3.session.Session(
            aws_access_key_id="setup", aws_secret_access_key="setup",
            region_name=REGION,
        )
        cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})
        s3 = session.client("s3", endpoint_url=endpoint, config=cfg)
        iam = session.client("iam", endpoint_url=endpoint, config=cfg)

        s3.create_bucket(Bucket=BUCKET)
        # Object Lock can only be enabled when a bucket is made (tests/it/object_lock.rs).
        s3.create_bucket(Bucket=LOCK_BUCKET, ObjectLockEnabledForBucket=True)
        creds = {}
        for name, statements in USERS.items():
            iam.create_user(UserName=name)
            iam.put_user_policy(
                UserName=name, PolicyName=f"{name}-policy",
                PolicyDocument=_policy(statements),
            )
            key = iam.create_access_key(UserName=name)["AccessKey"]
            creds[name] = {"key": key["AccessKeyId"],
                           "secret": key["SecretAccessKey"]}
    except Exception as exc:  # noqa: BLE001
        server.shutdown()
        _die(1, f"setup against {endpoint} failed: {exc!r}")

    # Phase 2: enforce authentication + IAM policy evaluation from now on,
    # for every request (same thing moto's /moto-api/reset-auth does).
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0

    def _stop(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    # SIGPIPE stays ignored (Python's default): a client killed mid-request (the tests
    # kill backups on purpose) must cost that request an EPIPE, not the server its life.

    line = json.dumps(
        {"endpoint": endpoint, "region": REGION, "bucket": BUCKET, **creds},
        separators=(",", ":"),
    )
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

    try:
        if sys.stdin is None:  # fd 0 closed: only a signal stops us
            while True:
                signal.pause()
        # Block until the parent closes our stdin (or dies).
        while sys.stdin.buffer.read1(65536):
            pass
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        try:
            server.shutdown()
            thread.join(5)
        except Exception:  # noqa: BLE001
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
