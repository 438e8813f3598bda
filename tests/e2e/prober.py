"""Continuous DNS prober, run in a pod (python + dnslib from the aliasd image):
``python -c <this file> SERVER PORT NAME WANT_IP RATE``. RATE lookups per
second, one at a time, each try from a new socket like a stub resolver with
``options timeout:1 attempts:2`` (glibc's default is 5 s and 2): a try fails
unless it is NOERROR with WANT_IP, a lookup fails when both tries fail.
Counts both. Stops when /tmp/stop exists and prints ``RESULT {json}``."""

import json
import os
import socket
import sys
import time

from dnslib import QTYPE, RCODE, DNSRecord

server, port, name, want, rate = (sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4],
                                  float(sys.argv[5]))
total = failed = 0
kinds: dict[str, int] = {}
qid = 0
start = next_at = time.monotonic()


def ask(qid: int) -> str:
    """One try: "ok" or why not."""
    q = DNSRecord.question(name, "A")
    q.header.id = qid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        try:
            s.sendto(q.pack(), (server, port))
            while True:
                r = DNSRecord.parse(s.recvfrom(4096)[0])
                if r.header.id != qid:
                    continue
                ips = [str(a.rdata) for a in r.rr if a.rtype == QTYPE.A]
                if r.header.rcode == 0 and want in ips:
                    return "ok"
                return str(RCODE.get(r.header.rcode)) if r.header.rcode else "wrong answer"
        except TimeoutError:
            return "timeout"
        except OSError as e:  # ICMP port unreachable: refused
            return type(e).__name__


retried = 0
while not os.path.exists("/tmp/stop"):
    qid = qid % 65534 + 1  # fixed, sequential message IDs
    why = ask(qid)
    if why != "ok":
        retried += 1
        print(f"RETRY {time.time():.3f} {why}", flush=True)
        qid += 1
        why = ask(qid)
    total += 1
    if why != "ok":
        failed += 1
        kinds[why] = kinds.get(why, 0) + 1
        print(f"FAIL {time.time():.3f} {why}", flush=True)
    next_at += 1 / rate
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    else:
        next_at = time.monotonic()
print("RESULT " + json.dumps({"total": total, "failed": failed, "kinds": kinds,
                              "first_try_failed": retried,
                              "seconds": round(time.monotonic() - start, 1)}), flush=True)
# Stay up until the pod is deleted: exiting here ends the container, which
# kills the `kubectl exec` that created /tmp/stop if it has not returned yet
# (seen once: exit 137 in Prober.stop).
while True:
    time.sleep(3600)
