#!/usr/bin/env python3
"""Host power-cut test of the boot-state record writer: `sphere-slots stress-record` rewrites
the record (sector by sector, fdatasync) in a loop; it is killed with SIGKILL at random moments
and the record must then always have a valid copy holding the last value the writer reported
as written, or the one after it (the write in flight when the kill came).

Usage: tests/record-powercut.py --tool PATH [--kills N] [--seed S]
Prints `ok - ...`/`FAIL - ...` and "N passed, M failed"; exit status 1 on any failure.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tool", required=True)
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    failures = []
    torn_seen = 0
    # On the disk (not a tmpfs /tmp), so fdatasync does real work as it would on the device.
    with tempfile.TemporaryDirectory(dir=os.environ.get("RECORD_POWERCUT_DIR", os.getcwd())) as tmp:
        env = os.path.join(tmp, "bootenv")
        with open(env, "wb") as f:
            f.truncate(1 << 20)
        base = [args.tool, "--bootenv", env]
        last_reported = 0
        for kill in range(args.kills):
            # Every other run syncs after each sector, so kills land inside a copy's write too.
            slow = ["--sync-each-sector"] if kill % 2 else []
            proc = subprocess.Popen(base + ["stress-record", "--count", "1000000"] + slow, stdout=subprocess.PIPE,
                                    text=True, bufsize=1)
            time.sleep(rng.uniform(0.005, 0.06))
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
            values = [int(v) for v in out.split()]
            if values:
                last_reported = values[-1]
            check = subprocess.run(base + ["--json", "check"], capture_output=True, text=True)
            if check.returncode != 0:
                failures.append(f"kill {kill}: no valid record: {check.stderr.strip()}")
                break
            record = json.loads(check.stdout)
            value = int(record["env"].get("sphere_stress", "0"))
            if any(not c["valid"] for c in record["copies"]):
                torn_seen += 1
            if value not in (last_reported, last_reported + 1):
                failures.append(f"kill {kill}: record holds {value}, writer last reported {last_reported}")
            last_reported = value
    print(f"#    {args.kills} kills (seed {args.seed}); {torn_seen} left one copy invalid (torn), the other took over")
    ok = not failures
    print(("ok   - " if ok else "FAIL - ") + f"record valid after each of {args.kills} SIGKILLs during writes"
          + ("" if ok else ": " + "; ".join(failures[:3])))
    print(f"{1 if ok else 0} passed, {0 if ok else 1} failed")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
