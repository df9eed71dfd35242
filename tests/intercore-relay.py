#!/usr/bin/env python3
"""A byte relay on the host between the A7 guest's inter-core port and the M4 machine's UART1,
which can damage the stream on command (tests/intercore-qemu-test.sh).

Usage: tests/intercore-relay.py --listen A7_SOCKET --connect M4_SOCKET --control CONTROL_SOCKET

The A7 QEMU connects to A7_SOCKET (as the client of `-chardev socket,...,reconnect=1`); the relay
connects to the M4 QEMU's UART1 server socket and copies bytes both ways, unchanged. A line on
CONTROL_SOCKET (one command per connection) changes that:
  noise   inject garbage (a false sync, junk, a truncated frame header) into both directions
          right now, and flip one bit in the next chunk each direction carries (corrupting a
          real frame)
  stats   reply with the counters: bytes each way, noise bursts, bits flipped
Each command is answered with one line.
"""
import argparse
import json
import os
import selectors
import socket

GARBAGE = b"\x00\xa5\xa5\x5a\x01\x04junk\xa5\x5a\x01\x04\x10\x00" + bytes(range(40)) + b"\xa5"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True)
    parser.add_argument("--connect", required=True)
    parser.add_argument("--control", required=True)
    args = parser.parse_args()

    m4 = socket.socket(socket.AF_UNIX)
    m4.connect(args.connect)
    for path in (args.listen, args.control):
        if os.path.exists(path):
            os.unlink(path)
    server = socket.socket(socket.AF_UNIX)
    server.bind(args.listen)
    server.listen(1)
    control = socket.socket(socket.AF_UNIX)
    control.bind(args.control)
    control.listen(4)

    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ, "accept")
    sel.register(control, selectors.EVENT_READ, "control")
    sel.register(m4, selectors.EVENT_READ, "m4")
    a7 = None
    stats = {"a7_to_m4": 0, "m4_to_a7": 0, "noise_bursts": 0, "bits_flipped": 0}
    flip = {"a7": False, "m4": False}

    def forward(data, to, direction, key):
        if flip[key] and len(data) > 0:
            data = bytearray(data)
            data[len(data) // 2] ^= 0x10
            data = bytes(data)
            flip[key] = False
            stats["bits_flipped"] += 1
        if to is not None:
            to.sendall(data)
        stats[direction] += len(data)

    while True:
        for key, _ in sel.select():
            what = key.data
            if what == "accept":
                conn, _ = server.accept()
                if a7 is not None:
                    sel.unregister(a7)
                    a7.close()
                a7 = conn
                sel.register(a7, selectors.EVENT_READ, "a7")
            elif what == "control":
                conn, _ = control.accept()
                command = conn.recv(256).decode(errors="replace").strip()
                if command == "noise":
                    if a7 is not None:
                        a7.sendall(GARBAGE)
                    m4.sendall(GARBAGE)
                    flip["a7"] = flip["m4"] = True
                    stats["noise_bursts"] += 1
                    conn.sendall(b"ok\n")
                elif command == "stats":
                    conn.sendall(json.dumps(stats).encode() + b"\n")
                else:
                    conn.sendall(b"unknown command\n")
                conn.close()
            elif what == "a7":
                data = a7.recv(65536)
                if not data:
                    sel.unregister(a7)
                    a7.close()
                    a7 = None
                    continue
                forward(data, m4, "a7_to_m4", "a7")
            elif what == "m4":
                data = m4.recv(65536)
                if not data:
                    return
                forward(data, a7, "m4_to_a7", "m4")


if __name__ == "__main__":
    main()
