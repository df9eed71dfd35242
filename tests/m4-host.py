#!/usr/bin/env python3
"""The A7 side of tests/m4-test.sh: talks the inter-core protocol to the M4 firmware over
QEMU's UART1 socket and prints ok / not ok lines.

Usage: tests/m4-host.py SOCKET protocol|deadline
  protocol  echo round trips through garbage and corruption, strangers, backpressure, telemetry
  deadline  the sampler's report: >= 100 jobs and 0 deadline misses
"""
import socket, sys, time
import intercore as ic

ECHO = ic.component_id("6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a51")
SAMPLER = ic.component_id("6a1f0e2c-3b4d-4e5f-8a9b-0c1d2e3f4a52")
PEER = ic.component_id("7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14")
STRANGER = ic.component_id("00000000-0000-4000-8000-000000000bad")
WINDOW = 4

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(0.2)
dec = ic.Decoder()
state = {app: {"seq": 0, "limit": WINDOW, "expected": 0} for app in (ECHO, SAMPLER)}
inbox = []
failures = 0

def check(cond, what):
    global failures
    print(("ok - " if cond else "not ok - ") + what, flush=True)
    failures += 0 if cond else 1

def pump(seconds):
    """Read frames for a while; apply credit; grant credit back for every data frame."""
    end = time.time() + seconds
    while time.time() < end:
        try:
            data = s.recv(4096)
        except socket.timeout:
            continue
        for f in dec.feed(data):
            st = state.get(f["src"])
            if st is None:
                continue
            if f["flags"] & ic.CREDIT and ((f["credit"] - st["limit"]) & 0xFFFF) < 0x8000:
                st["limit"] = f["credit"]
            if f["flags"] & ic.DATA:
                st["expected"] = (f["seq"] + 1) & 0xFFFF
                inbox.append(f)
                # Consumed at once: grant the window again.
                s.sendall(ic.encode(PEER, f["src"], b"", ic.ACK | ic.CREDIT, st["seq"],
                                    st["expected"], (st["expected"] + WINDOW) & 0xFFFF))

def frame(app, payload, src=PEER):
    st = state[app]
    assert ((st["limit"] - st["seq"]) & 0xFFFF) not in (0,) and ((st["limit"] - st["seq"]) & 0xFFFF) < 0x8000, "no credit"
    b = ic.encode(src, app, payload, ic.DATA | ic.ACK | ic.CREDIT, st["seq"], st["expected"],
                  (st["expected"] + WINDOW) & 0xFFFF)
    st["seq"] = (st["seq"] + 1) & 0xFFFF
    return b

def wait_for(pred, seconds=10):
    end = time.time() + seconds
    while time.time() < end:
        for f in inbox:
            if pred(f):
                inbox.remove(f)
                return f
        pump(0.2)
    return None

def credits(app):
    st = state[app]
    d = (st["limit"] - st["seq"]) & 0xFFFF
    return d if d < 0x8000 else 0

# (Re)open both connections: RESET starts each M4 app's flow over (its reports sent before we
# connected went nowhere and used up its credit).
for app in (ECHO, SAMPLER):
    s.sendall(ic.encode(PEER, app, b"", ic.ACK | ic.CREDIT | ic.RESET, 0, 0, WINDOW))

def protocol():
    # Echo round trip, through garbage before and after.
    s.sendall(b"\x00\xa5\xa5garbage" + frame(ECHO, b"hello from the A7") + b"\xa5\x5a\x01tail")
    f = wait_for(lambda f: f["src"] == ECHO and f["payload"] == b"hello from the A7")
    check(f is not None and f["dst"] == PEER and f["flags"] & ic.DATA, "echo round trip through garbage")

    # A corrupted frame is dropped; the intact one right behind it is echoed.
    bad = bytearray(frame(ECHO, b"corrupted"))
    bad[50] ^= 0x10
    state[ECHO]["seq"] -= 1  # the corrupted frame never arrives: reuse its sequence number
    s.sendall(bytes(bad) + frame(ECHO, b"intact"))
    f = wait_for(lambda f: f["src"] == ECHO and f["payload"] == b"intact")
    pump(0.3)
    check(f is not None and not any(g["payload"] == b"corrupted" for g in inbox),
          "corrupted frame dropped, the next one echoed")

    # A sender the echo app does not allow gets nothing.
    s.sendall(ic.encode(STRANGER, ECHO, b"let me in", ic.DATA))
    pump(0.5)
    check(not any(g["payload"] == b"let me in" for g in inbox), "frames from a component not allowed are dropped")

    # Backpressure: send as many as the M4 grants, then wait for credit; 12 round trips in order.
    got = []
    sent = 0
    deadline = time.time() + 20
    while len(got) < 12 and time.time() < deadline:
        while sent < 12 and credits(ECHO) > 0:
            s.sendall(frame(ECHO, b"msg %d" % sent))
            sent += 1
        pump(0.1)
        got += [f["payload"] for f in inbox if f["src"] == ECHO and f["payload"].startswith(b"msg ")]
        inbox[:] = [f for f in inbox if not (f["src"] == ECHO and f["payload"].startswith(b"msg "))]
    check(got == [b"msg %d" % i for i in range(12)], f"12 echoes within the credit window, in order ({len(got)} back)")

    # Telemetry from the echo app.
    s.sendall(frame(ECHO, b"stats"))
    f = wait_for(lambda f: f["src"] == ECHO and f["payload"].startswith(b"echo "))
    text = f["payload"].decode() if f else ""
    print("  " + text)
    fields = dict(kv.split("=") for kv in text.split()[1:]) if f else {}
    check(f is not None and int(fields.get("bad_frames", 0)) >= 1 and int(fields.get("not_allowed", 0)) == 1
          and int(fields.get("skipped_bytes", 0)) > 0, "telemetry counts garbage, bad frames and strangers")



def deadline():
    # The sampler: at least two seconds of 10 ms jobs, then its report.
    f = wait_for(lambda f: f["src"] == SAMPLER, 30)  # its pushed once-a-second reports
    check(f is not None and f["payload"].startswith(b"sampler "), "sampler pushes its reports (credit granted)")
    time.sleep(1)
    s.sendall(frame(SAMPLER, b"stats"))
    f = wait_for(lambda f: f["src"] == SAMPLER and f["dst"] == PEER and b"samples=" in f["payload"])
    text = f["payload"].decode() if f else ""
    print("  " + text)
    fields = dict(kv.split("=") for kv in text.split()[1:]) if f else {}
    check(int(fields.get("samples", 0)) >= 100 and fields.get("misses") == "0",
          "sampler: >= 100 jobs of 10 ms, 0 deadline misses while idle")


{"protocol": protocol, "deadline": deadline}[sys.argv[2]]()
sys.exit(1 if failures else 0)
