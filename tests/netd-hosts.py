#!/usr/bin/env python3
"""Test hosts for tests/netd-test.sh and scripts/bench-netd.sh (standard library only).

  netd-hosts.py serve LOG ZONE_DIR   TCP :80 and :8000, UDP :9 on every address (v4 and v6),
                                     DNS on 198.51.100.53 (the upstream: answers from ZONE_DIR,
                                     one file per name "A ttl addr..." lines) and 198.51.100.54
                                     (a rogue server that answers anything). Every connection,
                                     datagram and query is appended to LOG with its token.
  netd-hosts.py resolve NAME         getaddrinfo (the app's /etc/resolv.conf): prints addresses
  netd-hosts.py connect ADDR PORT TOKEN    TCP: send TOKEN, exit 0 only if the host said "ok"
  netd-hosts.py udp ADDR PORT TOKEN        one UDP datagram
  netd-hosts.py dns SERVER NAME            one raw A query to SERVER: exit 0 if answered
  netd-hosts.py raw DST TOKEN              a hand-made IPv4/UDP packet on a raw socket
  netd-hosts.py packet IFACE GW SRC DST TOKEN  a hand-made Ethernet/IPv4/UDP frame (packet
                                     socket) with a forged source address, to the gateway's MAC
Exit codes: 0 the attempt got an answer, 3 it did not (anything else: the client itself failed).
"""
import os
import select
import socket
import struct
import sys
import threading
import time

LOCK = threading.Lock()


def log(path, line):
    with LOCK, open(path, "a") as f:
        f.write(line + "\n")


def dns_name(buf, at):
    labels = []
    while buf[at]:
        n = buf[at]
        labels.append(buf[at + 1:at + 1 + n].decode("ascii", "replace"))
        at += 1 + n
    return ".".join(labels).lower(), at + 1


def dns_answer(query, records):
    """records: list of (type, ttl, rdata bytes); empty -> NXDOMAIN."""
    name, end = dns_name(query, 12)
    flags = 0x8180 if records else 0x8183
    head = query[:2] + struct.pack(">HHHHH", flags, 1, len(records), 0, 0)
    body = query[12:end + 4]
    for rtype, ttl, rdata in records:
        body += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata
    return head + body


def zone_records(zone_dir, name, qtype):
    path = os.path.join(zone_dir, name)
    if not os.path.isfile(path):
        return None
    out = []
    for line in open(path):
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, ttl, addr = parts[0], int(parts[1]), parts[2]
        if kind == "A" and qtype == 1:
            out.append((1, ttl, socket.inet_pton(socket.AF_INET, addr)))
        elif kind == "AAAA" and qtype == 28:
            out.append((28, ttl, socket.inet_pton(socket.AF_INET6, addr)))
    return out


def serve_dns(sock, logpath, zone_dir, rogue):
    while True:
        query, peer = sock.recvfrom(4096)
        try:
            name, end = dns_name(query, 12)
            qtype = struct.unpack(">H", query[end:end + 2])[0]
        except (IndexError, struct.error):
            continue
        log(logpath, f"dns {'rogue' if rogue else 'upstream'} {peer[0]} {name} {qtype}")
        if rogue:
            records = [(1, 60, socket.inet_aton("192.0.2.12"))] if qtype == 1 else []
        else:
            records = zone_records(zone_dir, name, qtype)
            if records is None:
                sock.sendto(dns_answer(query, []), peer)
                continue
        # NOERROR with no records for a known name and another type.
        reply = dns_answer(query, records) if records else dns_answer(query, []).replace(b"\x81\x83", b"\x81\x80", 1)
        sock.sendto(reply, peer)


def serve_tcp(sock, logpath, port):
    while True:
        conn, peer = sock.accept()
        conn.settimeout(2)
        try:
            token = conn.recv(200).decode(errors="replace").strip()
            log(logpath, f"tcp {port} {peer[0]} {conn.getsockname()[0]} {token}")
            conn.sendall(b"ok\n")
        except OSError:
            pass
        finally:
            conn.close()


def serve_udp(sock, logpath):
    while True:
        data, peer = sock.recvfrom(4096)
        log(logpath, f"udp {peer[0]} {data.decode(errors='replace').strip()}")


def serve(logpath, zone_dir):
    threads = []
    for family, any_addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for port in (80, 8000, 8080, 8081):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind((any_addr, port))
            except OSError:
                continue
            s.listen(64)
            threads.append(threading.Thread(target=serve_tcp, args=(s, logpath, port), daemon=True))
        u = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_INET6:
            u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        u.bind((any_addr, 9))
        threads.append(threading.Thread(target=serve_udp, args=(u, logpath), daemon=True))
    extra = [a for a in os.environ.get("NETD_HOSTS_UPSTREAM", "").split(",") if a]
    for addr, rogue in [("198.51.100.53", False), ("198.51.100.54", True)] + [(a, False) for a in extra]:
        try:
            d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            d.bind((addr, 53))
        except OSError:
            continue
        threads.append(threading.Thread(target=serve_dns, args=(d, logpath, zone_dir, rogue), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4_udp(src, dst, port, payload):
    udp = struct.pack(">HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack(">H", checksum(ip)) + ip[12:]
    return ip + udp


def main(argv):
    cmd = argv[1]
    if cmd == "serve":
        serve(argv[2], argv[3])
    elif cmd == "resolve":
        try:
            infos = socket.getaddrinfo(argv[2], 80, proto=socket.IPPROTO_TCP)
        except socket.gaierror as e:
            print(f"unresolved: {e}")
            return 3
        print(" ".join(sorted({i[4][0] for i in infos})))
        return 0
    elif cmd == "connect":
        addr, port, token = argv[2], int(argv[3]), argv[4]
        try:
            with socket.create_connection((addr, port), timeout=2) as s:
                s.sendall(token.encode() + b"\n")
                return 0 if s.recv(10).startswith(b"ok") else 1
        except OSError as e:
            print(f"connect {addr}:{port}: {e}")
            return 3
    elif cmd == "udp":
        s = socket.socket(family_of(argv[2]), socket.SOCK_DGRAM)
        try:
            s.sendto(argv[4].encode(), (argv[2], int(argv[3])))
        except OSError as e:
            print(f"udp: {e}")
        return 3
    elif cmd == "dns":
        s = socket.socket(family_of(argv[2]), socket.SOCK_DGRAM)
        s.settimeout(2)
        q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(l)]) + l.encode() for l in argv[3].split(".")) + b"\0\0\1\0\1"
        try:
            s.sendto(q, (argv[2], 53))
            s.recvfrom(4096)
            return 0
        except OSError as e:
            print(f"dns {argv[2]}: {e}")
            return 3
    elif cmd == "raw":
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        src.connect((argv[2], 9))
        try:
            s.sendto(ipv4_udp(src.getsockname()[0], argv[2], 9, argv[3].encode()), (argv[2], 0))
        except OSError as e:
            print(f"raw: {e}")
        return 3
    elif cmd == "packet":
        iface, gw, src, dst, token = argv[2:7]
        # The gateway's MAC from the neighbour table (filled by an earlier exchange with it).
        mac = None
        for line in open("/proc/net/arp").read().splitlines()[1:]:
            f = line.split()
            if f[0] == gw:
                mac = bytes.fromhex(f[3].replace(":", ""))
        if mac is None:
            print("packet: gateway MAC unknown")
            return 2
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((iface, 0))
        own = s.getsockname()[4]
        frame = mac + own + b"\x08\x00" + ipv4_udp(src, dst, 9, token.encode())
        s.send(frame)
        return 3
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
