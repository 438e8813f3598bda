"""Resolve-then-request client, run in a pod (python from the aliasd image):
``python -c <this file> NAME PORT``. Ten times a second it looks NAME up
through the pod's resolver (the cluster DNS, a fresh lookup each time: no
cache in the pod) and GETs ``http://ADDRESS:PORT/`` with a 1 s timeout,
printing one line per round: ``TIME ADDRESS RESULT``, ADDRESS ``-`` when the
lookup failed, RESULT the body or ``ERR:<why>``."""

import socket
import sys
import time
import urllib.request

name, port = sys.argv[1], int(sys.argv[2])
next_at = time.monotonic()
while True:
    t = time.time()
    try:
        ip = socket.gethostbyname(name)
    except OSError:
        ip = "-"
    result = "ERR:lookup"
    if ip != "-":
        try:
            with urllib.request.urlopen(f"http://{ip}:{port}/", timeout=1) as r:
                result = r.read().decode() or "ERR:empty"
        except Exception as e:
            result = f"ERR:{type(e).__name__}"
    print(f"{t:.3f} {ip} {result}", flush=True)
    next_at += 0.1
    time.sleep(max(0.0, next_at - time.monotonic()))
