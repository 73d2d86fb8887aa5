#!/usr/bin/env python3
"""Crash drill for Idempotency-Key: writers send keyed POSTs (families and lessons) to
`cedar serve`, the server is killed with SIGKILL at a random moment, restarted, and every
request that was in flight is retried with the same key and body until it gets a final
answer. Then it checks the promise of DESIGN.md:

  - no acknowledged write is lost;
  - a retried request never acts twice (one family per key, one lesson per key);
  - a lesson is never "in conflict with itself" (409 conflicts) on its retry;
  - a dead process's claim blocks a retry for at most the lease (15 s).

Usage: bench/crash_idempotency.py [--rounds 5] [--writers 16] [--database-url URL]
(default: a fresh SQLite database in a temp dir; give a PostgreSQL URL of an empty database
to drill PostgreSQL). Needs a built `target/debug/cedar` (or CEDAR_BIN). Not part of .ci/run.
"""

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Api:
    def __init__(self, port):
        self.port = port

    def call(self, method, path, body=None, token=None, key=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if key:
            headers["idempotency-key"] = key
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return response.status, parsed, response.getheader("retry-after")


def start(binary, port, env):
    proc = subprocess.Popen([binary, "serve", "--no-worker", "--addr", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if Api(port).call("GET", "/ready", timeout=2)[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("cedar did not become ready")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = os.environ.get("CEDAR_BIN", os.path.join(root, "target", "debug", "cedar"))
    data = tempfile.mkdtemp()
    port = free_port()
    env = dict(os.environ, CEDAR_DATA_DIR=data, CEDAR_CONFIG="/dev/null", CEDAR_LOG_LEVEL="error",
               CEDAR_RATE_LIMIT_PER_MINUTE="0", CEDAR_AUTH_RATE_PER_IP="100000")
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    subprocess.run([binary, "demo"], env=env, check=True, stdout=subprocess.DEVNULL)
    server = start(binary, port, env)
    api = Api(port)
    status, session, _ = api.call("POST", "/auth/v1/token?grant_type=password",
                                  {"email": "admin@demo.cedarheights.ca", "password": "cedar-demo-2026"})
    token = session["access_token"]
    teachers = [t["id"] for t in api.call("GET", "/v1/teachers?limit=100", token=token)[1]["items"]]
    students = [s["id"] for s in api.call("GET", "/v1/students?limit=200&status=active", token=token)[1]["items"]]

    counter = iter(range(10**9))
    lock = threading.Lock()
    sent = {}        # key -> (path, body)
    answered = {}    # key -> status of the first final answer
    totals = {"in_flight_at_kill": 0, "still_running_409": 0, "self_conflicts": 0, "longest_block_s": 0.0}

    def request_body(kind, n):
        if kind == "families":
            return "/v1/families", {"name": f"Crash family {n}"}
        start_at = 1_830_000_000 + n * 3600  # one distinct hour per lesson: no real conflicts
        return "/v1/lessons", {"teacher_id": random.choice(teachers), "student_id": random.choice(students),
                               "starts_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_at)),
                               "duration_minutes": 30, "override_availability": True}

    def writer(stop):
        while not stop.is_set():
            with lock:
                n = next(counter)
            kind = random.choice(["families", "lessons"])
            path, body = request_body(kind, n)
            key = f"drill-{uuid.uuid4()}"
            with lock:
                sent[key] = (path, body)
            try:
                status, _, _ = api.call("POST", path, body, token, key, timeout=10)
                with lock:
                    answered.setdefault(key, status)
            except OSError:
                pass  # in flight at the kill: retried below

    for round_no in range(args.rounds):
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(stop,)) for _ in range(args.writers)]
        for t in threads:
            t.start()
        time.sleep(random.uniform(0.5, 2.0))
        server.send_signal(signal.SIGKILL)
        server.wait()
        stop.set()
        for t in threads:
            t.join()
        server = start(binary, port, env)
        pending = [k for k in sent if k not in answered]
        totals["in_flight_at_kill"] += len(pending)
        for key in pending:
            path, body = sent[key]
            began = time.time()
            while True:
                status, reply, retry_after = api.call("POST", path, body, token, key)
                if status == 409 and reply and "still being processed" in reply.get("detail", ""):
                    totals["still_running_409"] += 1
                    time.sleep(float(retry_after or 1))
                    continue
                break
            totals["longest_block_s"] = max(totals["longest_block_s"], time.time() - began)
            if path == "/v1/lessons" and status == 409:
                totals["self_conflicts"] += 1
            answered[key] = status
        print(f"round {round_no + 1}: {len(pending)} requests in flight at the kill, retried", flush=True)

    # One row per acknowledged key, never two.
    families = api.call("GET", "/v1/families?limit=200", token=token)
    names = {}
    cursor = None
    while True:
        path = "/v1/families?limit=200" + (f"&cursor={cursor}" if cursor else "")
        page = api.call("GET", path, token=token)[1]
        for f in page["items"]:
            names[f["name"]] = names.get(f["name"], 0) + 1
        cursor = page.get("next_cursor")
        if not cursor:
            break
    duplicates = sum(1 for name, count in names.items() if name.startswith("Crash family") and count > 1)
    created = sum(1 for k, s in answered.items() if sent[k][0] == "/v1/families" and s == 201)
    present = sum(1 for name in names if name.startswith("Crash family"))
    server.send_signal(signal.SIGTERM)
    server.wait()
    print(json.dumps({"requests": len(sent), **totals, "families_acknowledged": created,
                      "families_present": present, "duplicate_families": duplicates}, indent=2))
    ok = duplicates == 0 and totals["self_conflicts"] == 0 and present >= created \
        and totals["longest_block_s"] <= 16
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
