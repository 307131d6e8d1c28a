#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""nbdctl.py SOCKET [--wait EVENT] [--timeout S] [REQUEST...]

Client of nbdkit-blockcopy-plugin's control socket (JSON lines). Sends
each REQUEST (a JSON object) and prints the answer line; exits 1 at the
first answer that is not ok. With --wait, then reads lines until the
event EVENT ("mirroring", "completed", "failed", "canceled") arrives and
prints it; exits 1 when another final event or the timeout comes first.
"""
import json
import socket
import sys
import time


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    path, args = args[0], args[1:]
    wait, timeout, reqs = None, 30.0, []
    while args:
        a = args.pop(0)
        if a == "--wait":
            wait = args.pop(0)
        elif a == "--timeout":
            timeout = float(args.pop(0))
        else:
            reqs.append(a)
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    f = s.makefile("r")
    deadline = time.monotonic() + timeout
    events = []
    for r in reqs:
        s.sendall(r.encode() + b"\n")
        while True:
            line = f.readline()
            if not line:
                sys.exit("control socket closed")
            msg = json.loads(line)
            if "event" in msg:
                events.append(msg)
                continue
            print(line.strip())
            if not msg.get("ok"):
                sys.exit(1)
            break
    if not wait:
        return
    for ev in events:
        if ev["event"] == wait:
            print(json.dumps(ev))
            return
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            sys.exit("timed out waiting for event %s" % wait)
        s.settimeout(left)
        try:
            line = f.readline()
        except (socket.timeout, TimeoutError):
            sys.exit("timed out waiting for event %s" % wait)
        if not line:
            sys.exit("control socket closed")
        msg = json.loads(line)
        if msg.get("event") == wait:
            print(line.strip())
            return
        if msg.get("event") in ("completed", "failed", "canceled"):
            print(line.strip())
            sys.exit("event %s came instead of %s" % (msg["event"], wait))


if __name__ == "__main__":
    main()
