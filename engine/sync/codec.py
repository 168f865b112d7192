"""The IPVS sync protocol on the wire: messages of version 1 (and the legacy version 0).

Byte for byte as net/netfilter/ipvs/ip_vs_sync.c builds and reads them; every
multi-byte field is big-endian.

Version 1 message: header ``reserved=0, syncid, size(2), nr_conns, version=1,
spare(2)=0`` (8 bytes), then connection records, each starting on a 4-byte boundary
(zero padding between records, none after the last; ``size`` counts the padding
between records).  A record: ``type`` (bit 0: IPv6), ``protocol``, ``ver_size``
(version in the top 4 bits, always 0; record length without padding in the low 12),
``flags(4)`` (HASHED cleared), ``state(2)``, ``cport vport dport (2 each)``,
``fwmark(4)``, ``timeout(4, seconds)``, ``caddr vaddr daddr`` (4 or 16 bytes each):
36 bytes for IPv4, 72 for IPv6; then options ``type(1) len(1) data``: 1 = sequence
data (24 bytes), 2 = persistence-engine data, 3 = persistence-engine name; an
unknown type is skipped when it carries the optional bit 0x40, else the record is
dropped.

Version 0 (``sync_version=0``): header ``nr_conns, syncid, size(2)``, records of 24
bytes ``reserved, protocol, cport, vport, dport, caddr, vaddr, daddr, flags(2),
state(2)`` followed by 24 bytes of sequence data when a SEQ flag is set; IPv4 only,
no timeout and no fwmark.

Decoding never raises: a malformed message or record gives a reason (counted by the
receiver, engine/sync/backup.py) and the records decoded before it, which the kernel
has already applied by then (ip_vs_process_message processes records in order and
stops at the first bad one).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyvs.engine.model import (
    AF_INET,
    AF_INET6,
    CONN_F_HASHED,
    CONN_F_INACTIVE,
    CONN_F_NOOUTPUT,
    CONN_F_SYNC,
    CONN_F_TEMPLATE,
    FWD_MASK,
)

SYNC_PROTO_VER = 1
MESG_HEADER = struct.Struct(">BBHBbH")  # struct ip_vs_sync_mesg
MESG_V0_HEADER = struct.Struct(">BBH")  # struct ip_vs_sync_mesg_v0
CONN_FIXED = struct.Struct(">BBHIHHHHII")  # struct ip_vs_sync_v4/v6 up to the addresses
CONN_V0 = struct.Struct(">BBHHH4s4s4sHH")  # struct ip_vs_sync_conn_v0
SEQ = struct.Struct(">IIIIII")  # in_seq, out_seq: {init_seq, delta, previous_delta}
V4_SIZE = CONN_FIXED.size + 12  # 36
V6_SIZE = CONN_FIXED.size + 48  # 72
V0_SIZE = CONN_V0.size  # 24
V0_FULL_SIZE = V0_SIZE + SEQ.size  # 48

STYPE_F_INET6 = 1
SVER_SHIFT, SVER_MASK = 12, 0x0FFF
OPT_SEQ_DATA, OPT_PE_DATA, OPT_PE_NAME = 1, 2, 3
OPT_F_PARAM = 0x40  # an option type with this bit may be skipped when unknown
PEDATA_MAXLEN = 255  # IP_VS_PEDATA_MAXLEN
PENAME_MAXLEN = 16  # IP_VS_PENAME_MAXLEN

CONN_F_OUT_SEQ = 0x0200
CONN_F_IN_SEQ = 0x0400
CONN_F_SEQ_MASK = 0x0600
CONN_F_NO_CPORT = 0x0800
# IP_VS_CONN_F_BACKUP_MASK: the bits a backup takes from a version 1 record
BACKUP_MASK = (FWD_MASK | CONN_F_NOOUTPUT | CONN_F_INACTIVE | CONN_F_SEQ_MASK
               | CONN_F_NO_CPORT | CONN_F_TEMPLATE)
# IP_VS_CONN_F_BACKUP_UPD_MASK: the bits an update may change on an existing entry
BACKUP_UPD_MASK = CONN_F_INACTIVE | CONN_F_SEQ_MASK


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """One connection (or template) as a sync message carries it."""

    af: int
    protocol: int
    flags: int
    state: int
    cport: int
    vport: int
    dport: int
    fwmark: int
    timeout: int  # seconds (0 in version 0 messages: the receiver chooses)
    caddr: bytes
    vaddr: bytes
    daddr: bytes
    seq: tuple[int, int, int, int, int, int] | None = None
    pe_data: bytes | None = None
    pe_name: bytes | None = None

    @property
    def is_template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)


# -- encoding --------------------------------------------------------------------------------
def record_size(rec: SyncRecord) -> int:
    """The length ip_vs_sync_conn() reserves for a version 1 record (without padding)."""
    size = V6_SIZE if rec.af == AF_INET6 else V4_SIZE
    if rec.flags & CONN_F_SEQ_MASK:
        size += SEQ.size + 2
    if rec.pe_data:
        size += len(rec.pe_data) + 2
        if rec.pe_name:
            size += len(rec.pe_name) + 2
    return size


def encode_record(rec: SyncRecord) -> bytes:
    """A version 1 record, as ip_vs_sync_conn() fills it."""
    size = record_size(rec)
    parts = [CONN_FIXED.pack(STYPE_F_INET6 if rec.af == AF_INET6 else 0, rec.protocol,
                             size & SVER_MASK, rec.flags & ~CONN_F_HASHED & 0xFFFFFFFF,
                             rec.state, rec.cport, rec.vport, rec.dport, rec.fwmark,
                             rec.timeout),
             rec.caddr, rec.vaddr, rec.daddr]
    if rec.flags & CONN_F_SEQ_MASK:
        parts += [bytes((OPT_SEQ_DATA, SEQ.size)), SEQ.pack(*(rec.seq or (0,) * 6))]
    if rec.pe_data:
        parts += [bytes((OPT_PE_DATA, len(rec.pe_data))), rec.pe_data]
        if rec.pe_name:
            parts += [bytes((OPT_PE_NAME, len(rec.pe_name))), rec.pe_name]
    return b"".join(parts)


def encode_record_v0(rec: SyncRecord) -> bytes:
    """A version 0 record (ip_vs_sync_conn_v0): 16-bit flags, sequence data if flagged."""
    out = CONN_V0.pack(0, rec.protocol, rec.cport, rec.vport, rec.dport, rec.caddr,
                       rec.vaddr, rec.daddr, rec.flags & ~CONN_F_HASHED & 0xFFFF,
                       rec.state & 0xFFFF)
    if rec.flags & CONN_F_SEQ_MASK:
        out += SEQ.pack(*(rec.seq or (0,) * 6))
    return out


class SyncBuffer:
    """One message being filled (struct ip_vs_sync_buff): created for a first record,
    sent when the next record does not fit or when it is 2 s old."""

    def __init__(self, syncid: int, maxlen: int, first_len: int, version: int,
                 created: float) -> None:
        header = MESG_HEADER.size if version else MESG_V0_HEADER.size
        self.version = version
        self.syncid = syncid
        self.capacity = max(first_len + header, maxlen)  # ip_vs_sync_buff_create
        self.body = bytearray()
        self.size = header
        self.nr_conns = 0
        self.created = created

    def fits(self, length: int) -> bool:
        return self.size + self._pad() + length <= self.capacity

    def _pad(self) -> int:
        """Records start on a 4-byte boundary (version 0 records are 24 or 48 bytes)."""
        return (4 - self.size) & 3

    def add(self, record: bytes) -> None:
        pad = self._pad()
        if pad:
            self.body += bytes(pad)
            self.size += pad
        self.body += record
        self.size += len(record)
        self.nr_conns += 1

    def message(self) -> bytes:
        if self.version:
            head = MESG_HEADER.pack(0, self.syncid, self.size, self.nr_conns,
                                    SYNC_PROTO_VER, 0)
        else:
            head = MESG_V0_HEADER.pack(self.nr_conns, self.syncid, self.size)
        return head + bytes(self.body)


# -- decoding --------------------------------------------------------------------------------
@dataclass(slots=True)
class Decoded:
    """What one datagram held: the records to apply, in order, and why decoding stopped
    early (``error``) or which records were left out (``skipped``: reasons)."""

    syncid: int = 0
    version: int = -1
    records: list[SyncRecord] | None = None
    error: str | None = None
    skipped: list[str] | None = None


def decode_message(buf: bytes, backup_syncid: int, protocols: dict[int, int]) -> Decoded:
    """ip_vs_process_message(): ``backup_syncid`` filters (0 takes every syncid);
    ``protocols`` maps each supported protocol to its number of states (records of
    other protocols, or with a state out of range, are skipped as the kernel does)."""
    out = Decoded(records=[], skipped=[])
    n = len(buf)
    if n < MESG_V0_HEADER.size:
        out.error = "short-message"
        return out
    reserved, syncid, size = MESG_V0_HEADER.unpack_from(buf)
    out.syncid = syncid
    if n != size:
        out.error = "bad-message-size"
        return out
    if backup_syncid and syncid != backup_syncid:
        out.error = "wrong-syncid"
        return out
    if n >= MESG_HEADER.size:
        _, _, _, nr_conns, version, spare = MESG_HEADER.unpack_from(buf)
    else:
        version = spare = -1
    if version == SYNC_PROTO_VER and reserved == 0 and spare == 0:
        out.version = 1
        _decode_v1(buf, nr_conns, protocols, out)
    else:
        out.version = 0
        _decode_v0(buf, protocols, out)
    return out


def _decode_v1(buf: bytes, nr_conns: int, protocols: dict[int, int], out: Decoded) -> None:
    n = len(buf)
    end = MESG_HEADER.size
    for _ in range(nr_conns):
        p = end
        if p + V4_SIZE > n:
            out.error = "record-beyond-message"
            return
        ver_size = (buf[p + 2] << 8) | buf[p + 3]
        size = ver_size & SVER_MASK
        end = p + size
        if end > n:
            out.error = "record-beyond-message"
            return
        if ver_size >> SVER_SHIFT:
            out.error = "unknown-record-version"
            return
        result = _decode_record(buf, p, end, protocols)
        if isinstance(result, SyncRecord):
            out.records.append(result)
        elif result.startswith("!"):  # the whole rest of the message is dropped
            out.error = result[1:]
            return
        else:
            out.skipped.append(result)
        end = p + ((size + 3) & ~3)


def _decode_record(buf: bytes, p: int, end: int,
                   protocols: dict[int, int]) -> SyncRecord | str:
    """ip_vs_proc_sync_conn(): a record, or a reason -- "!reason" when the kernel drops
    the rest of the message (negative return), "reason" when only this record."""
    rtype, protocol, _, flags, state, cport, vport, dport, fwmark, timeout = \
        CONN_FIXED.unpack_from(buf, p)
    if rtype & STYPE_F_INET6:
        af, alen = AF_INET6, 16
    elif rtype == 0:
        af, alen = AF_INET, 4
    else:
        return "!bad-record-type"
    a = p + CONN_FIXED.size
    q = a + 3 * alen
    if q > end:
        return "!record-too-short"
    seq = pe_data = pe_name = None
    seen = 0
    skip = None
    while q < end:
        if q + 2 > end:
            return "!bad-option"
        ptype, plen = buf[q], buf[q + 1]
        q += 2
        if not plen or q + plen > end:
            return "!bad-option"
        kind = ptype & ~OPT_F_PARAM
        if kind == OPT_SEQ_DATA:
            if plen != SEQ.size or seen & 1:
                return "!bad-seq-option"
            seq = SEQ.unpack_from(buf, q)
            seen |= 1
        elif kind == OPT_PE_DATA:
            if plen > PEDATA_MAXLEN or seen & 2:
                return "!bad-pe-data"
            pe_data = bytes(buf[q:q + plen])
            seen |= 2
        elif kind == OPT_PE_NAME:
            if plen > PENAME_MAXLEN or seen & 4:
                return "!bad-pe-name"
            pe_name = bytes(buf[q:q + plen])
            seen |= 4
        elif not ptype & OPT_F_PARAM:
            skip = "unknown-mandatory-option"
            break
        q += plen
    if skip is not None:
        return skip
    flags = (flags & BACKUP_MASK) | CONN_F_SYNC
    reason = _check_state(protocol, flags, state, protocols)
    if reason:
        return reason
    if pe_data:
        return "persistence-engine-unsupported"  # ip_vs_conn_fill_param_sync: no PE here
    return SyncRecord(af, protocol, flags, state, cport, vport, dport, fwmark, timeout,
                      bytes(buf[a:a + alen]), bytes(buf[a + alen:a + 2 * alen]),
                      bytes(buf[a + 2 * alen:a + 3 * alen]), seq, pe_data, pe_name)


def _check_state(protocol: int, flags: int, state: int, protocols: dict[int, int]) -> str:
    if flags & CONN_F_TEMPLATE:
        return ""  # an odd template state is only logged by the kernel
    states = protocols.get(protocol)
    if states is None:
        return "unsupported-protocol"
    if state >= states:
        return "invalid-state"
    return ""


def _decode_v0(buf: bytes, protocols: dict[int, int], out: Decoded) -> None:
    """ip_vs_process_message_v0(): flags are taken as sent (HASHED cleared, SYNC set)."""
    n = len(buf)
    nr_conns = buf[0]
    p = MESG_V0_HEADER.size
    for _ in range(nr_conns):
        if p + V0_SIZE > n:
            out.error = "record-beyond-message"
            return
        _, protocol, cport, vport, dport, caddr, vaddr, daddr, flags, state = \
            CONN_V0.unpack_from(buf, p)
        flags = (flags | CONN_F_SYNC) & ~CONN_F_HASHED
        seq = None
        if flags & CONN_F_SEQ_MASK:
            if p + V0_FULL_SIZE > n:
                out.error = "record-beyond-message"
                return
            seq = SEQ.unpack_from(buf, p + V0_SIZE)
            p += V0_FULL_SIZE
        else:
            p += V0_SIZE
        reason = _check_state(protocol, flags, state, protocols)
        if reason:
            out.skipped.append(reason)
            continue
        out.records.append(SyncRecord(AF_INET, protocol, flags, state, cport, vport, dport,
                                      0, 0, caddr, vaddr, daddr, seq))

