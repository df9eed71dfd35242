#!/usr/bin/env python3
"""Run QEMU with its serial console on a pipe, timestamp every console line on the host, and
report boot milestones. Used by scripts/run-qemu.sh; python3 standard library only.

Every console line is echoed (unless --quiet) and written to --log as
    [   3.512] <line>        (seconds since QEMU was started, host monotonic clock)

Milestones, in host seconds since QEMU start:
  qemu-start      0 by definition
  kernel-start    the first console line containing "Booting Linux" (earlycon prints it at once)
  <name>          every `sphere-init: milestone NAME k=v... t=GUEST` line (see
                  daemons/sphere-init/src/milestone.rs); the guest's CLOCK_MONOTONIC is kept too
  qemu-exit       when QEMU exited, with its status
They are printed as a table at the end and written as JSON to --milestones.

Control channel: with --ctl-socket the helper connects to QEMU's chardev socket of the
virtio-serial port `sphere.ctl` and can send `poweroff` / `reboot`: when --command is given, as
soon as the guest prints the boot-complete milestone; and on timeout or Ctrl-C (a clean
poweroff first, then QEMU is killed if it does not exit within --grace seconds).

Exit status: QEMU's own, or 124 after a timeout, 130 after Ctrl-C, 3 when the kernel panicked
(panic=-1 plus -no-reboot would otherwise end QEMU with status 0).
"""

import argparse
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

MILESTONE = re.compile(r"sphere-init: milestone (\S+)((?: [^ =]+=\S+)*) t=(\d+\.\d+)")


def parse_fields(text):
    fields = {}
    for part in text.split():
        key, _, value = part.partition("=")
        fields[key] = value
    return fields


class Control:
    """Client end of QEMU's `-chardev socket,server=on` for the sphere.ctl port."""

    def __init__(self, path):
        self.path = path
        self.sock = None

    def connect(self):
        if self.sock is not None or not self.path:
            return self.sock is not None
        if not os.path.exists(self.path):
            return False
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self.path)
            sock.setblocking(False)
            self.sock = sock
        except OSError:
            return False
        return True

    def send(self, command):
        if not self.connect():
            return False
        try:
            self.sock.sendall((command + "\n").encode())
            return True
        except OSError:
            return False

    def drain(self):
        """Reads and returns the guest's replies (if any)."""
        if self.sock is None:
            return ""
        try:
            return self.sock.recv(4096).decode(errors="replace")
        except (BlockingIOError, OSError):
            return ""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="console log file (host-timestamped lines)")
    parser.add_argument("--milestones", help="write milestones as JSON here")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a forced stop (0: none)")
    parser.add_argument("--grace", type=float, default=15.0, help="seconds to wait after a poweroff request")
    parser.add_argument("--ctl-socket", help="QEMU chardev socket of the sphere.ctl virtio-serial port")
    parser.add_argument("--command", choices=["poweroff", "reboot"], help="send after boot-complete")
    parser.add_argument("--quiet", action="store_true", help="do not echo the console")
    parser.add_argument("qemu", nargs=argparse.REMAINDER, help="-- QEMU command line")
    args = parser.parse_args()
    qemu = args.qemu[1:] if args.qemu[:1] == ["--"] else args.qemu
    if not qemu:
        parser.error("no QEMU command line after --")

    control = Control(args.ctl_socket)
    interrupted = []
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    signal.signal(signal.SIGTERM, lambda *_: interrupted.append(True))

    milestones = [{"name": "qemu-start", "host": 0.0}]
    seen = set()
    t0 = time.monotonic()
    proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = open(args.log, "w", encoding="utf-8", errors="replace")
    out = sys.stdout
    deadline = t0 + args.timeout if args.timeout > 0 else None
    stop_reason = None  # "timeout" | "interrupt"
    kill_at = None
    command_sent = False
    pending = b""

    def note(name, guest=None, fields=None):
        entry = {"name": name, "host": round(time.monotonic() - t0, 6)}
        if guest is not None:
            entry["guest"] = guest
        if fields:
            entry["fields"] = fields
        milestones.append(entry)
        return entry

    def handle_line(raw):
        try:
            parse_line(raw)
        except Exception as error:  # a helper bug must never orphan QEMU
            print(f"run-qemu: internal error on a console line: {error!r}", file=sys.stderr)

    def parse_line(raw):
        nonlocal command_sent
        host = time.monotonic() - t0
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        log.write(f"[{host:8.3f}] {line}\n")
        log.flush()
        if not args.quiet:
            out.write(line + "\n")
            out.flush()
        if "kernel-panic" not in seen and "Kernel panic" in line:
            seen.add("kernel-panic")
            note("kernel-panic")
        if "kernel-start" not in seen and "Booting Linux" in line:
            seen.add("kernel-start")
            note("kernel-start")
        match = MILESTONE.search(line)
        if match:
            name, fields, guest = match.group(1), parse_fields(match.group(2)), float(match.group(3))
            note(name, guest=guest, fields=fields)
            if name == "boot-complete" and args.command and not command_sent:
                command_sent = control.send(args.command)
                note(f"{args.command}-sent" if command_sent else f"{args.command}-send-failed")

    stream = proc.stdout
    fd = stream.fileno()
    while True:
        if args.ctl_socket:
            control.connect()
            control.drain()
        now = time.monotonic()
        if stop_reason is None and (interrupted or (deadline is not None and now >= deadline)):
            stop_reason = "interrupt" if interrupted else "timeout"
            sent = control.send("poweroff")
            msg = f"run-qemu: {stop_reason}: " + (
                f"asked the guest to power off; killing QEMU in {args.grace:.0f}s if it does not exit"
                if sent
                else "no control channel; killing QEMU"
            )
            print(msg, file=sys.stderr)
            log.write(f"[{now - t0:8.3f}] {msg}\n")
            kill_at = now + (args.grace if sent else 0)
        if kill_at is not None and now >= kill_at and proc.poll() is None:
            proc.kill()
        waits = [t for t in (deadline if stop_reason is None else None, kill_at) if t is not None]
        timeout = max(0.0, min(waits) - now) if waits else 1.0
        ready, _, _ = select.select([fd], [], [], min(timeout, 1.0))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                handle_line(raw)
    if pending:
        handle_line(pending)
    status = proc.wait()
    note("qemu-exit", fields={"status": status})
    log.close()

    print("run-qemu: milestones (host s since QEMU start; [guest CLOCK_MONOTONIC s]):", file=sys.stderr)
    for m in milestones:
        extra = " ".join(f"{k}={v}" for k, v in m.get("fields", {}).items())
        guest = f"[{m['guest']:9.6f}]" if "guest" in m else " " * 11
        print(f"run-qemu:   {m['name']:<20} {m['host']:8.3f}  {guest} {extra}".rstrip(), file=sys.stderr)
    if args.milestones:
        tmp = args.milestones + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"milestones": milestones, "status": status, "stopped_by": stop_reason}, f, indent=2)
        os.replace(tmp, args.milestones)
    if stop_reason == "timeout":
        return 124
    if stop_reason == "interrupt":
        return 130
    if status == 0 and "kernel-panic" in seen:
        # panic=-1 reboots and -no-reboot turns that into a normal QEMU exit: not a success.
        print("run-qemu: the kernel panicked", file=sys.stderr)
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
