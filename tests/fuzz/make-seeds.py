#!/usr/bin/env python3
"""Write the crafted seed inputs of tests/fuzz (committed in seeds/): well-formed
requests for each parser, so the fuzzer starts past the format checks, and the hostile
cases the review found (GSO size 1, a producer a ring ahead, 21-slot chains, huge sizes,
state flapping)."""
import os
import struct

here = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# blkif: [ring pages selector, flags (1: x86_32, 2: persistent, 4: read-only),
# req_prod u32, limits (1 barrier, 2 flush, 4 discard), pad], then the ring's slots.
def blk_req(op, nseg, id_, sector, segs):
    r = struct.pack("<BBHIQQ", op, nseg, 0, 0, id_, sector)
    for g, first, last in segs:
        r += struct.pack("<IBBH", g, first, last, 0)
    return r.ljust(112, b"\0")


def blk_indirect(inner, nseg, id_, sector, pages):
    r = struct.pack("<BBHIQQHH", 6, inner, nseg, 0, id_, sector, 0, 0)
    r += b"".join(struct.pack("<I", p) for p in pages)
    return r.ljust(112, b"\0")


def blk(flags, prod, reqs, limits=7, sel=0):
    return struct.pack("<BBIBB", sel, flags, prod, limits, 0) + b"".join(reqs)


put("blkif", "read", blk(0, 1, [blk_req(0, 1, 1, 0, [(1, 0, 7)])]))
put("blkif", "write-persistent", blk(2, 1, [blk_req(1, 2, 1, 8, [(1, 0, 7), (2, 0, 7)])]))
put("blkif", "merge-run", blk(2, 3, [blk_req(0, 1, i, 8 * i, [(1 + i, 0, 7)]) for i in range(3)]))
put("blkif", "flush-barrier", blk(0, 2, [blk_req(3, 0, 1, 0, []), blk_req(2, 1, 2, 0, [(3, 0, 7)])]))
put("blkif", "discard", blk(0, 1, [struct.pack("<BBHIQQQ", 5, 0, 0, 0, 1, 0, 64).ljust(112, b"\0")]))
put("blkif", "indirect", blk(2, 1, [blk_indirect(0, 16, 1, 0, [5, 6])]))
put("blkif", "read-only-write", blk(4, 1, [blk_req(1, 1, 1, 0, [(1, 0, 7)])]))
put("blkif", "capacity-edge", blk(0, 2, [blk_req(0, 1, 1, 8191, [(1, 0, 7)]), blk_req(0, 1, 2, 2**64 - 4, [(1, 0, 7)])]))
put("blkif", "producer-ahead", blk(0, 2000, [blk_req(0xEE, 0, 1, 0, [])]))
put("blkif", "multi-page", blk(2, 40, [blk_req(0, 1, i, i * 8, [(1 + i % 60, 0, 7)]) for i in range(40)], sel=2))

# netif_tx: [features, tx req_prod, rx posted, gso_min-1, page offset, packet flags,
# gso size u16, gso kind, time, waiting, pad x5], then the TX ring's slots (12 bytes
# each), which also seed the guest pages.
def tx_slot(gref, off, flags, id_, size):
    return struct.pack("<IHHHH", gref, off, flags, id_, size)


def extra_gso(size, kind, more=0):
    return struct.pack("<BBHBBHH", 1, more, size, kind, 0, 0, 0)


def nethdr(features, prod, posted, pflags=0, gso=0, kind=1):
    return struct.pack("<BBBBBBHBBB", features, prod, posted, 87, 0, pflags, gso, kind, 0, 0).ljust(16, b"\0")


CSUM, MORE, EXTRA = 1, 4, 8
put("netif_tx", "one-frame", nethdr(0x3F, 1, 8) + tx_slot(1, 0, 0, 1, 60))
put("netif_tx", "gso-size-1", nethdr(0x01, 4, 64, 5, 1, 1) + tx_slot(1, 0, CSUM | EXTRA | MORE, 1, 9000)
    + extra_gso(1, 1) + tx_slot(2, 0, MORE, 2, 4096) + tx_slot(3, 0, 0, 3, 808))
put("netif_tx", "gso-to-non-gso", nethdr(0x09, 3, 64, 5, 100, 1) + tx_slot(1, 0, CSUM | EXTRA | MORE, 1, 6000)
    + extra_gso(100, 1) + tx_slot(2, 0, 0, 2, 1904))
put("netif_tx", "21-slots", nethdr(0x3F, 21, 8) + b"".join(
    tx_slot(1 + i, 0, MORE if i < 20 else 0, i, 2100 if i == 0 else 100) for i in range(21)))
put("netif_tx", "unterminated", nethdr(0x3F, 1, 8) + tx_slot(1, 0, MORE, 1, 200))
put("netif_tx", "crossing-page", nethdr(0x3F, 2, 8) + tx_slot(1, 0, MORE, 1, 3000) + tx_slot(2, 4000, 0, 2, 1000))
put("netif_tx", "jumbo", nethdr(0x3F, 16, 8) + b"".join(
    tx_slot(1 + i, 0, MORE if i < 15 else 0, i, 65535 if i == 0 else 4096) for i in range(16)))
put("netif_tx", "mcast-extras", nethdr(0x3F, 3, 8) + tx_slot(1, 0, EXTRA, 1, 60)
    + struct.pack("<BB6sHH", 2, 1, b"\x01\x00\x5e\x00\x00\x01", 0, 0)[:12].ljust(12, b"\0")
    + struct.pack("<BB6s", 3, 0, b"\x01\x00\x5e\x00\x00\x01").ljust(12, b"\0"))

# netif_ctrl: [req_prod, queues, pad, pad], then 16-byte requests (id, type, 3 words).
def ctrl(ty, a, b, c, id_=1):
    return struct.pack("<HHIII", id_, ty, a, b, c)


put("netif_ctrl", "configure", bytes([6, 3, 0, 0]) + ctrl(7, 1, 0, 0) + ctrl(2, 3, 0, 0) + ctrl(3, 9, 40, 0)
    + ctrl(5, 8, 0, 0) + ctrl(6, 9, 0, 8) + ctrl(1, 0, 0, 0))
put("netif_ctrl", "hostile-mapping", bytes([2, 3, 0, 0]) + ctrl(6, 9, 2**32 - 1, 2**32 - 1) + ctrl(3, 9, 2**32 - 1, 0))

# xenstore_wire: messages as xenstored sends them.
def xs(kind, req, tx, payload):
    return struct.pack("<IIII", kind, req, tx, len(payload)) + payload


put("xenstore_wire", "replies", xs(2, 1, 0, b"4") + xs(15, 0, 0, b"backend/vbd/5/51712/state\0tok\0")
    + xs(16, 3, 0, b"EAGAIN\0") + xs(1, 4, 0, b"a\0b\0c\0"))
put("xenstore_wire", "too-long", struct.pack("<IIII", 2, 1, 0, 5000))

# xenbus: events (low 2 bits: created, removed, frontend state; bit 7: connect succeeds).
put("xenbus", "life", bytes([0, 2 | (1 << 2), 2 | (3 << 2) | 0x80, 2 | (4 << 2), 2 | (5 << 2), 2 | (6 << 2),
                             2 | (1 << 2), 2 | (3 << 2) | 0x80, 1]) + b"backend vbd 7 51712 vif 3 0")
put("xenbus", "flap", bytes([0] + [2 | ((i % 10) << 2) | (0x80 if i % 3 else 0) for i in range(60)]))

# wire_rx: frames from the wire, each a u16 length then its bytes: TCP streams the
# coalescer merges (IPv4 and IPv6, checksums right), with a gap and an ARP between.
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s > 0xffff:
        s = (s & 0xffff) + (s >> 16)
    return s


def tcp_frame(v6, sport, seq, ip_id, payload, flags=0x10):
    tcp = struct.pack("!HHIIBBHHH", sport, 5201, seq, 9, 8 << 4, flags, 500, 0, 0)
    tcp += bytes([1, 1, 8, 10]) + struct.pack("!II", 77, 0) + payload
    if v6:
        src, dst = b"\xfd" + b"\0" * 14 + b"\x01", b"\xfd" + b"\0" * 14 + b"\x02"
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
    else:
        src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        pseudo = src + dst + struct.pack("!xBH", 6, len(tcp))
    c = 0xffff - csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    eth = bytes([0, 0x16, 0x3e, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1])
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), 6, 64) + src + dst
        return eth + b"\x86\xdd" + ip + tcp
    ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp), ip_id, 0x4000, 64, 6, 0) + src + dst
    ip = ip[:10] + struct.pack("!H", 0xffff - csum(ip)) + ip[12:]
    return eth + b"\x08\x00" + ip + tcp


def frames(fs):
    return b"".join(struct.pack("<H", len(f)) + f for f in fs)


for v6 in (False, True):
    stream = [tcp_frame(v6, 40000, 1000 + i * 1000, 7 + i, bytes([i]) * 1000) for i in range(6)]
    stream[5] = tcp_frame(v6, 40000, 6000, 12, b"end", 0x18)
    gap = tcp_frame(v6, 40000, 20000, 40, b"x" * 1000)
    put("wire_rx", "stream-v6" if v6 else "stream-v4", frames(stream[:3] + [b"\xff" * 42] + stream[3:] + [gap]))
