#!/usr/bin/env python3
"""OpenSphere's inter-core protocol in Python (stdlib only), for host-side tools and tests.

The format is docs/intercore-protocol.md; daemons/sphere-intercore is the reference
implementation. CRC-32 is zlib's, CRC-16/CCITT-FALSE is binascii.crc_hqx(data, 0xFFFF), and
the compact frame's CRC-8/SMBUS is crc8() below.

Usage: scripts/intercore.py seed DIR   write fuzz seeds for the intercore_stream target
"""
import binascii
import os
import struct
import sys
import uuid
import zlib

SYNC = b"\xa5\x5a"
COMPACT_SYNC = b"\xa5\xc3"
VERSION = 1
HEADER_LEN = 46
COMPACT_HEADER_LEN = 8
MAX_PAYLOAD = 1040
ACK, CREDIT, DATA, RESET = 0x01, 0x02, 0x04, 0x08


def component_id(text):
    return uuid.UUID(text).bytes


def encode(src, dst, payload=b"", flags=DATA, seq=0, ack=0, credit=0):
    assert len(payload) <= MAX_PAYLOAD and len(src) == 16 and len(dst) == 16
    head = SYNC + struct.pack("<BBH", VERSION, flags, len(payload)) + src + dst
    head += struct.pack("<HHH", seq, ack, credit)
    head += struct.pack("<H", binascii.crc_hqx(head, 0xFFFF))
    body = head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def crc8(data):
    """CRC-8/SMBUS (polynomial 0x07, init 0): a compact frame's header check."""
    c = 0
    for b in data:
        c ^= b
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def encode_compact(channel, payload=b"", flags=DATA, seq=0, credit=0):
    """A compact data frame on `channel` (1..255; only CREDIT and DATA flags; low bytes of seq
    and credit)."""
    assert 1 <= channel <= 255 and len(payload) <= MAX_PAYLOAD and not flags & ~(CREDIT | DATA)
    head = COMPACT_SYNC + struct.pack("<BHBB", channel, len(payload) | flags << 11, seq & 0xFF, credit & 0xFF)
    head += bytes([crc8(head)])
    body = head + payload
    return body + struct.pack("<I", zlib.crc32(body))


class Decoder:
    """Finds frames in a byte stream, resynchronising after garbage (like the Rust Decoder)."""

    def __init__(self):
        self.buf = b""

    def feed(self, data):
        self.buf += data
        frames = []
        while True:
            found = [at for at in (self.buf.find(SYNC), self.buf.find(COMPACT_SYNC)) if at >= 0]
            if not found:
                self.buf = self.buf[-1:] if self.buf.endswith(SYNC[:1]) else b""
                return frames
            self.buf = self.buf[min(found):]
            if self.buf.startswith(COMPACT_SYNC):
                verdict = self._compact()
                if verdict == "more":
                    return frames
                if verdict is None:
                    self.buf = self.buf[1:]
                else:
                    frames.append(verdict)
                continue
            if len(self.buf) < HEADER_LEN:
                return frames
            version, flags, length = struct.unpack_from("<BBH", self.buf, 2)
            (hcrc,) = struct.unpack_from("<H", self.buf, 44)
            if (version != VERSION or flags & ~0x0F or length > MAX_PAYLOAD
                    or binascii.crc_hqx(self.buf[:44], 0xFFFF) != hcrc):
                self.buf = self.buf[1:]
                continue
            total = HEADER_LEN + length + 4
            if len(self.buf) < total:
                return frames
            (crc,) = struct.unpack_from("<I", self.buf, total - 4)
            if zlib.crc32(self.buf[: total - 4]) != crc:
                self.buf = self.buf[1:]
                continue
            seq, ack, credit = struct.unpack_from("<HHH", self.buf, 38)
            frames.append({
                "flags": flags, "src": self.buf[6:22], "dst": self.buf[22:38],
                "seq": seq, "ack": ack, "credit": credit,
                "payload": self.buf[HEADER_LEN: total - 4],
            })
            self.buf = self.buf[total:]

    def _compact(self):
        """The compact frame at the front: a frame dict (consumed), None (not one), or "more"."""
        if len(self.buf) < COMPACT_HEADER_LEN:
            return "more"
        channel, word, seq, credit, hcrc = struct.unpack_from("<BHBBB", self.buf, 2)
        flags, length = word >> 11, word & 0x7FF
        if channel == 0 or flags & ~(CREDIT | DATA) or length > MAX_PAYLOAD or crc8(self.buf[:7]) != hcrc:
            return None
        total = COMPACT_HEADER_LEN + length + 4
        if len(self.buf) < total:
            return "more"
        (crc,) = struct.unpack_from("<I", self.buf, total - 4)
        if zlib.crc32(self.buf[: total - 4]) != crc:
            return None
        frame = {"flags": flags, "channel": channel, "seq": seq, "credit": credit,
                 "payload": self.buf[COMPACT_HEADER_LEN: total - 4]}
        self.buf = self.buf[total:]
        return frame


def seed(directory):
    os.makedirs(directory, exist_ok=True)
    a, b = bytes(range(16)), bytes(range(16, 32))
    frames = encode(a, b, b"hello", DATA | ACK | CREDIT, 1, 2, 6) + encode(b, a, b"", ACK | CREDIT)
    frames += encode_compact(7, b"compact", DATA | CREDIT, 300, 301)
    # Mode 0 (raw stream), chunk byte 3: garbage, two frames, a truncated one.
    with open(os.path.join(directory, "raw-stream"), "wb") as f:
        f.write(b"\x00\x03" + b"junk\xa5" + frames + encode(a, b, b"x" * 40)[:30])
    with open(os.path.join(directory, "max-payload"), "wb") as f:
        f.write(b"\x00\xff" + encode(a, b, bytes(MAX_PAYLOAD)))
    # Modes 1 and 2 (described frames): garbage length, payload length / 4, 39 field bytes, payload.
    described = b"\x05JUNK!\x02" + bytes(range(39)) + b"payl" + b"\x00\x00" + bytes(39)
    for mode in (1, 2):
        with open(os.path.join(directory, f"described-{mode}"), "wb") as f:
            f.write(bytes([mode, 1]) + described + b"\x10\x00\x03")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "seed":
        seed(sys.argv[2])
    else:
        sys.exit(__doc__)
