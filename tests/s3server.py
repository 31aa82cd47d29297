"""A local S3-compatible server for tests: moto in server mode on 127.0.0.1, in its own process.

``local_s3()`` yields the environment a client needs (endpoint, region, test
credentials, no instance metadata) and a function that creates a bucket; the
server process is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pyarrow.fs as pafs

from raycluster import free_port

SERVER = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]))
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the test closes our stdin (or dies)
server.stop()
"""


@contextlib.contextmanager
def local_s3(authenticate_after: int | None = None):
    """``authenticate_after``: moto checks credentials and IAM policies from that request on (the ones before
    set up users and buckets); by default it checks nothing."""
    port = free_port()
    env = {"AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true"}
    server_env = dict(os.environ)
    if authenticate_after is not None:
        server_env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(authenticate_after)
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=server_env)
    try:
        for line in proc.stdout:  # moto prints a line of its own first
            if line.strip() == "ready":
                break
        else:
            raise RuntimeError("the moto server did not start")
        fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                               access_key="test", secret_key="test", allow_bucket_creation=True)

        def make_bucket(name: str) -> str:
            fs.create_dir(name)
            return f"s3://{name}"

        yield env, make_bucket
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def with_s3_env(env: dict):
    """Sets ``env`` in this process (pyarrow reads the store's settings from it); returns a function that undoes it."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)

    def undo():
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return undo


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(0.5)
