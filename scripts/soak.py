#!/usr/bin/env python3
"""Soak test for `pvc-guard serve` (not run in CI; see RELIABILITY.md).

Starts the release binary on 127.0.0.1 with a generated certificate, sends a
fixed-rate mix of valid and hostile requests for --duration seconds, and
prints, per interval: requests sent, answered as expected, errors by kind,
and the server's RSS, open file descriptors and threads. Exits non-zero if
any request got an unexpected answer or the server died.

    nice -n 19 python3 scripts/soak.py --duration 600

Python 3 standard library only. Every loop is bounded in count and time:
the scheduler sends at most duration * rate requests and stops at the
deadline; each request has a socket timeout; the slow client sends a
bounded number of bytes.
"""

import argparse
import http.client
import json
import os
import pathlib
import queue
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "admission"
MAX_BODY = 256 * 1024  # small, so oversized bodies are cheap to send
HEADER_TIMEOUT = 5  # the server's default --header-timeout
TIMEOUT = 15  # per request: above the server's 10 s request timeout

# (kind, weight): mostly what the API server sends, some of everything else.
MIX = [
    ("validate", 35),
    ("mutate", 35),
    ("malformed_json", 8),
    ("wrong_content_type", 5),
    ("v1beta1", 5),
    ("oversized", 4),
    ("plain_http", 5),
    ("slow_client", 3),
]


class Unexpected(Exception):
    """The server answered, but not as it should have: an error of `kind`."""

    def __init__(self, kind):
        super().__init__(kind)
        self.kind = kind


def fixtures():
    out = []
    for path in sorted(FIXTURES.glob("*.json")):
        out.append(json.loads(path.read_text()))
    if not out:
        sys.exit(f"no fixtures in {FIXTURES}")
    return out


class Soak:
    def __init__(self, args, port, ca):
        self.args = args
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.check_hostname = False  # the certificate names localhost
        self.reviews = fixtures()
        self.local = threading.local()
        self.lock = threading.Lock()
        self.sent = Counter()
        self.answered = Counter()
        self.errors = Counter()
        self.latency = []  # seconds, valid requests, current interval
        self.retries = 0  # stale kept-alive connections retried

    # --- transport -------------------------------------------------------

    def conn(self):
        """A kept-alive connection per worker, as the API server keeps one."""
        c = getattr(self.local, "conn", None)
        if c is None:
            c = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self.ctx, timeout=TIMEOUT
            )
            self.local.conn = c
        return c

    def drop_conn(self):
        c = getattr(self.local, "conn", None)
        if c is not None:
            c.close()
        self.local.conn = None

    def post(self, path, body, content_type="application/json", fresh=False, chunked=False):
        """One request. A kept-alive connection the server closed while idle
        (its header timeout covers the wait for the next request) fails on
        first use; like Go's HTTP client, retry that once on a new one."""
        reused = not fresh and getattr(self.local, "conn", None) is not None
        try:
            return self._post(path, body, content_type, fresh, chunked)
        except (ConnectionError, ssl.SSLError, http.client.RemoteDisconnected):
            if not reused:
                raise
            with self.lock:
                self.retries += 1
            return self._post(path, body, content_type, fresh, chunked)

    def _post(self, path, body, content_type, fresh, chunked):
        headers = {"Content-Type": content_type}
        if fresh:
            c = http.client.HTTPSConnection(
                "127.0.0.1", self.port, context=self.ctx, timeout=TIMEOUT
            )
        else:
            c = self.conn()
        try:
            if chunked:
                headers["Transfer-Encoding"] = "chunked"
                pieces = (body[i : i + 65536] for i in range(0, len(body), 65536))
                c.request("POST", path, body=pieces, headers=headers, encode_chunked=True)
            else:
                c.request("POST", path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            if r.getheader("Connection", "").lower() == "close" and not fresh:
                self.drop_conn()
            return r.status, data
        except Exception:
            if not fresh:
                self.drop_conn()
            raise
        finally:
            if fresh:
                c.close()

    # --- the mix ---------------------------------------------------------

    def valid(self, endpoint):
        review = random.choice(self.reviews)
        uid = f"soak-{random.getrandbits(64):016x}"
        review = dict(review, request=dict(review["request"], uid=uid))
        started = time.monotonic()
        status, data = self.post(f"/{endpoint}", json.dumps(review).encode())
        elapsed = time.monotonic() - started
        if status != 200:
            raise Unexpected(f"status_{status}")
        answer = json.loads(data)
        if answer.get("response", {}).get("uid") != uid:
            raise Unexpected("wrong_uid")
        with self.lock:
            self.latency.append(elapsed)

    def expect(self, want, status):
        if status != want:
            raise Unexpected(f"status_{status}_want_{want}")

    def malformed_json(self):
        body = random.choice(
            [b"{", b"not json", b'{"apiVersion": "admission.k8s.io/v1", "kind": ', b"\xff\xfe", b"[]"]
        )
        self.expect(400, self.post("/validate", body)[0])

    def wrong_content_type(self):
        body = json.dumps(random.choice(self.reviews)).encode()
        ct = random.choice(["text/plain", "application/yaml", "application/x-www-form-urlencoded"])
        self.expect(415, self.post("/mutate", body, content_type=ct)[0])

    def v1beta1(self):
        review = dict(random.choice(self.reviews), apiVersion="admission.k8s.io/v1beta1")
        self.expect(400, self.post("/validate", json.dumps(review).encode())[0])

    def oversized(self):
        body = b'{"apiVersion": "admission.k8s.io/v1", "pad": "' + b"x" * MAX_BODY + b'"}'
        # Half declare their length (refused before reading), half stream it
        # chunked (refused when the limit is crossed).
        chunked = random.random() < 0.5
        try:
            status, _ = self.post("/validate", body, fresh=True, chunked=chunked)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
            # The server answers 413 and closes before the whole body is
            # sent; a reset while sending is that answer seen late.
            return
        self.expect(413, status)

    def plain_http(self):
        """Plain HTTP on the TLS port: a readable 400, then the server closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
            s.sendall(b"POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}")
            data = b""
            for _ in range(16):  # bounded: the answer is one short response
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            if not data.startswith(b"HTTP/1.1 400"):
                raise Unexpected("plain_http_not_400")

    def slow_client(self):
        """Headers one byte at a time, never finished: cut off by the server."""
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
        with self.ctx.wrap_socket(raw, server_hostname="localhost") as s:
            started = time.monotonic()
            line = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"a" * 64
            for byte in line:  # bounded by the line's length and by time
                if time.monotonic() - started > HEADER_TIMEOUT * 3:
                    raise Unexpected("slow_client_not_cut_off")
                try:
                    s.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    break  # cut off: expected
                time.sleep(0.25)
            else:
                # Sent everything without being cut off: wait for the close.
                s.settimeout(HEADER_TIMEOUT * 2)
                try:
                    data = s.recv(4096)
                except (ConnectionResetError, ssl.SSLError):
                    data = b""
                except socket.timeout:
                    raise Unexpected("slow_client_not_cut_off")
                if data and not data.startswith(b"HTTP/1.1 408"):
                    raise Unexpected("slow_client_answered")
            if time.monotonic() - started > HEADER_TIMEOUT * 3:
                raise Unexpected("slow_client_not_cut_off")

    def one(self, kind):
        try:
            if kind in ("validate", "mutate"):
                self.valid(kind)
            else:
                getattr(self, kind)()
            with self.lock:
                self.answered[kind] += 1
        except Unexpected as e:
            with self.lock:
                self.errors[f"{kind}:{e.kind}"] += 1
        except socket.timeout:
            with self.lock:
                self.errors[f"{kind}:timeout"] += 1
        except ConnectionRefusedError:
            with self.lock:
                self.errors[f"{kind}:refused"] += 1
        except (ConnectionError, ssl.SSLError, http.client.HTTPException, OSError) as e:
            with self.lock:
                self.errors[f"{kind}:{type(e).__name__}"] += 1
        except ValueError:
            with self.lock:
                self.errors[f"{kind}:bad_json_answer"] += 1


def proc_status(pid):
    out = {}
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for key in ("VmRSS", "VmHWM", "Threads"):
        m = re.search(rf"^{key}:\s+(\d+)", text, re.M)
        if m:
            out[key] = int(m.group(1))
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    return out


def start_server(binary, tmp):
    ca = os.path.join(tmp, "ca.pem")
    log_path = os.path.join(tmp, "server.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [
            binary,
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--write-ca",
            ca,
            "--max-body-bytes",
            str(MAX_BODY),
            "--log-format",
            "text",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    port = None
    while time.monotonic() < deadline and port is None:
        if proc.poll() is not None:
            sys.exit(f"the server exited: {pathlib.Path(log_path).read_text()}")
        m = re.search(r"listening on https://127\.0\.0\.1:(\d+)", pathlib.Path(log_path).read_text())
        if m and os.path.exists(ca):
            port = int(m.group(1))
        else:
            time.sleep(0.1)
    if port is None:
        proc.kill()
        sys.exit(f"no 'listening on' line within 30 s: {pathlib.Path(log_path).read_text()}")
    return proc, port, ca, log_path


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, required=True, help="seconds (at most 4 h)")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between report lines")
    p.add_argument("--workers", type=int, default=16, help="client threads")
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "pvc-guard"))
    p.add_argument("--json-out", help="write the per-interval figures here")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if not 0 < args.duration <= 4 * 3600 or not 0 < args.rate <= 1000:
        sys.exit("--duration must be in (0, 14400] and --rate in (0, 1000]")
    random.seed(args.seed)

    tmp = tempfile.mkdtemp(prefix="pvc-guard-soak-")
    proc, port, ca, log_path = start_server(args.binary, tmp)
    # The server logs every decision: the log goes to a file in tmp, not a
    # pipe nobody reads (a full pipe would block the server).
    soak = Soak(args, port, ca)
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    total = int(args.duration * args.rate)
    period = 1.0 / args.rate
    pending = queue.Queue(maxsize=args.workers * 4)  # bounds the backlog
    rows = []
    print(f"pvc-guard pid {proc.pid} on 127.0.0.1:{port}; {total} requests at {args.rate}/s "
          f"for {args.duration:.0f} s; log {log_path}", flush=True)
    header = f"{'t_s':>6} {'sent':>7} {'answered':>8} {'errors':>6} {'rss_kb':>8} {'fds':>4} {'thr':>4} {'p50_ms':>7} {'p99_ms':>7}  errors_by_kind"
    print(header, flush=True)

    def task(kind):
        try:
            soak.one(kind)
        finally:
            pending.get_nowait()

    start = time.monotonic()
    deadline = start + args.duration
    next_report = start + args.interval
    last = {"sent": 0, "answered": 0}
    dropped = 0
    died = False

    def report(now):
        st = proc_status(proc.pid) or {}
        with soak.lock:
            lat = sorted(soak.latency)
            soak.latency = []
            sent = sum(soak.sent.values())
            answered = sum(soak.answered.values())
            errors = dict(soak.errors)
        q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000 if lat else 0.0  # noqa: E731
        row = {
            "t": round(now - start, 1),
            "sent": sent,
            "answered": answered,
            "errors": sum(errors.values()),
            "errors_by_kind": errors,
            "dropped_client_backlog": dropped,
            "keepalive_retries": soak.retries,
            "rss_kb": st.get("VmRSS"),
            "hwm_kb": st.get("VmHWM"),
            "fds": st.get("fds"),
            "threads": st.get("Threads"),
            "p50_ms": round(q(0.5), 2),
            "p99_ms": round(q(0.99), 2),
        }
        rows.append(row)
        kinds_text = ", ".join(f"{k}={v}" for k, v in sorted(errors.items())) or "-"
        print(f"{row['t']:>6.0f} {sent:>7} {answered:>8} {row['errors']:>6} {row['rss_kb'] or 0:>8} "
              f"{row['fds'] or 0:>4} {row['threads'] or 0:>4} {row['p50_ms']:>7.2f} {row['p99_ms']:>7.2f}  {kinds_text}",
              flush=True)

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        for i in range(total):  # bounded in count ...
            now = time.monotonic()
            if now >= deadline:  # ... and in time
                break
            if proc.poll() is not None:
                died = True
                break
            due = start + i * period
            if due > now:
                time.sleep(due - now)
            kind = random.choices(kinds, weights)[0]
            try:
                pending.put_nowait(kind)
            except queue.Full:
                # The client cannot keep up: counted, not hidden as latency.
                dropped += 1
                continue
            with soak.lock:
                soak.sent[kind] += 1
            pool.submit(task, kind)
            if time.monotonic() >= next_report:
                report(time.monotonic())
                next_report += args.interval
        # In-flight requests finish within TIMEOUT (or the slow client's cap).
        pool.shutdown(wait=True)
    report(time.monotonic())

    alive = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = "killed after 30 s"
    final = rows[-1]
    print()
    print(f"sent by kind:     {dict(sorted(soak.sent.items()))}")
    print(f"answered by kind: {dict(sorted(soak.answered.items()))}")
    print(f"errors by kind:   {final['errors_by_kind'] or 'none'}")
    print(f"dropped (client backlog full): {dropped}; stale keep-alive connections retried: {soak.retries}")
    rss = [r["rss_kb"] for r in rows if r["rss_kb"]]
    if rss:
        print(f"RSS kB: first {rss[0]}, last {rss[-1]}, max {max(rss)}; peak (VmHWM) {final['hwm_kb']}")
    print(f"server alive at the end: {alive and not died}; exit after SIGTERM: {code}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "sent": soak.sent,
                       "answered": soak.answered, "dropped": dropped}, f, indent=1)
    if died or not alive or final["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
