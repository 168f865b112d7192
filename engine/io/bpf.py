"""eBPF from Python without a compiler: the bpf(2) system call, maps, and a tiny assembler.

The XDP port (engine/io/steer.py) needs one small program -- steer the frames pyvs
serves into an AF_XDP socket, pass everything else to the kernel -- and two maps.
Writing its few dozen instructions here keeps the project free of clang and libbpf
at install time; the kernel's verifier checks the program when it is loaded and its
log is part of the error if it refuses.

Encoding follows include/uapi/linux/bpf.h and Documentation/bpf/standardization/
instruction-set.rst: 8-byte instructions (opcode, dst/src registers, 16-bit offset,
32-bit immediate); a 64-bit immediate load takes two slots.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    pass


# __NR_bpf per architecture (the kernel's syscall tables; the generic table, used by
# arm64, riscv and loongarch, numbers it 280)
BPF_SYSCALLS = {
    "x86_64": 321, "amd64": 321, "i386": 357, "i686": 357,
    "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "armv7l": 386, "armv6l": 386, "armv8l": 386,
    "ppc64le": 361, "ppc64": 361, "s390x": 351,
}


def syscall_number(machine: str | None = None) -> int:
    """__NR_bpf for ``machine`` (default: this one, platform.machine())."""
    machine = machine or platform.machine()
    try:
        return BPF_SYSCALLS[machine]
    except KeyError:
        raise BpfError(errno.ENOSYS, f"bpf(2): pyvs does not know the system call number "
                       f"on {machine!r} (known: {', '.join(sorted(BPF_SYSCALLS))}); "
                       "--io xdp is not available here, use --io ring") from None


# commands
MAP_CREATE, MAP_UPDATE_ELEM, MAP_DELETE_ELEM = 0, 2, 3
PROG_LOAD = 5
# types
MAP_HASH = 1
MAP_XSKMAP = 17
PROG_XDP = 6
# XDP actions and helpers
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
FN_map_lookup_elem = 1
FN_redirect_map = 51


def bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, max(len(attr), 128))
    r = _libc.syscall(syscall_number(), cmd, buf, len(buf))
    if r < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf({cmd}): {os.strerror(err)}")
    return r


class Map:
    """A BPF map owned by this process (closed with it)."""

    def __init__(self, map_type: int, key_size: int, value_size: int, max_entries: int) -> None:
        self.key_size, self.value_size = key_size, value_size
        self.fd = bpf(MAP_CREATE, struct.pack("<5I", map_type, key_size, value_size,
                                              max_entries, 0))

    def _elem(self, cmd: int, key: bytes, value: bytes | None = None, flags: int = 0) -> None:
        k = ctypes.create_string_buffer(key, self.key_size)
        v = None if value is None else ctypes.create_string_buffer(value, self.value_size)
        # fields a command does not use must be zero (the kernel's CHECK_ATTR)
        bpf(cmd, struct.pack("<IxxxxQQQ", self.fd, ctypes.addressof(k),
                             0 if v is None else ctypes.addressof(v), flags))

    def update(self, key: bytes, value: bytes) -> None:
        self._elem(MAP_UPDATE_ELEM, key, value)

    def delete(self, key: bytes) -> None:
        self._elem(MAP_DELETE_ELEM, key)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load_program(prog_type: int, insns: bytes, name: str = "pyvs") -> int:
    """Load a program; a refusal raises BpfError carrying the verifier's log."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(b"GPL")
    logbuf = ctypes.create_string_buffer(1 << 16)
    attr = struct.pack("<IIQQIIQII16s", prog_type, len(insns) // 8, ctypes.addressof(code),
                       ctypes.addressof(lic), 1, len(logbuf), ctypes.addressof(logbuf), 0, 0,
                       name.encode()[:15])
    try:
        return bpf(PROG_LOAD, attr)
    except BpfError as err:
        raise BpfError(err.errno, f"the kernel refused the XDP program: {err.strerror}\n"
                       + logbuf.value.decode(errors="replace")[-2000:]) from None


class Asm:
    """Just enough of an eBPF assembler for engine/io/steer.py, with forward labels.

    Registers are ints 0..10 (r10 is the read-only frame pointer).  Sizes: 1, 2, 4, 8.
    """

    _SIZE = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}
    _ALU = {"+": 0x00, "-": 0x10, "|": 0x40, "&": 0x50, "<<": 0x60, ">>": 0x70, "=": 0xB0}
    _JMP = {"==": 0x10, ">": 0x20, ">=": 0x30, "!=": 0x50, "<": 0xA0, "<=": 0xB0}

    def __init__(self) -> None:
        self.insns: list[list[int]] = []  # [code, dst, src, off, imm]
        self.labels: dict[str, int] = {}
        self.fixups: list[tuple[int, str]] = []

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> None:
        self.insns.append([code, dst, src, off, imm])

    def label(self, name: str) -> None:
        self.labels[name] = len(self.insns)

    # ALU64 with an immediate or a register (src given as "rN" via reg=True)
    def alu(self, op: str, dst: int, imm: int) -> None:
        self._emit(0x07 | self._ALU[op], dst, imm=imm)

    def alu_reg(self, op: str, dst: int, src: int) -> None:
        self._emit(0x07 | 0x08 | self._ALU[op], dst, src)

    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        self._emit(0x61 | self._SIZE[size], dst, src, off)

    def stx(self, size: int, dst: int, off: int, src: int) -> None:
        self._emit(0x63 | self._SIZE[size], dst, src, off)

    def st(self, size: int, dst: int, off: int, imm: int) -> None:
        self._emit(0x62 | self._SIZE[size], dst, off=off, imm=imm)

    def ld_map(self, dst: int, map_fd: int) -> None:
        self._emit(0x18, dst, 1, imm=map_fd)  # BPF_PSEUDO_MAP_FD
        self._emit(0, 0, 0, imm=0)

    def jmp(self, op: str, dst: int, imm: int, target: str) -> None:
        self.fixups.append((len(self.insns), target))
        self._emit(0x05 | self._JMP[op], dst, imm=imm)

    def jmp_reg(self, op: str, dst: int, src: int, target: str) -> None:
        self.fixups.append((len(self.insns), target))
        self._emit(0x05 | 0x08 | self._JMP[op], dst, src)

    def goto(self, target: str) -> None:
        self.fixups.append((len(self.insns), target))
        self._emit(0x05)

    def call(self, fn: int) -> None:
        self._emit(0x85, imm=fn)

    def exit(self) -> None:
        self._emit(0x95)

    def assemble(self) -> bytes:
        for at, target in self.fixups:
            self.insns[at][3] = self.labels[target] - at - 1
        return b"".join(struct.pack("<BBhI", c, (s << 4) | d, o, i & 0xFFFFFFFF)
                        for c, d, s, o, i in self.insns)


PROG_TEST_RUN = 10
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15


def program_name(prog_id: int) -> str | None:
    """The name of a loaded program by id (None if it is gone)."""
    try:
        fd = bpf(PROG_GET_FD_BY_ID, struct.pack("<I", prog_id))
    except BpfError:
        return None
    try:
        info = ctypes.create_string_buffer(256)
        bpf(OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", fd, len(info), ctypes.addressof(info)))
        return info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")  # bpf_prog_info.name
    finally:
        os.close(fd)


def test_run(prog_fd: int, data: bytes) -> int:
    """Run a loaded program once on ``data`` (BPF_PROG_TEST_RUN); its return value.
    For tests: the kernel executes the same instructions as on the wire."""
    buf = ctypes.create_string_buffer(data, len(data))
    out = ctypes.create_string_buffer(len(data) + 256)
    attr = ctypes.create_string_buffer(struct.pack(
        "<IIIIQQII", prog_fd, 0, len(data), len(out), ctypes.addressof(buf),
        ctypes.addressof(out), 1, 0), 128)
    r = _libc.syscall(syscall_number(), PROG_TEST_RUN, attr, 128)
    if r < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"BPF_PROG_TEST_RUN: {os.strerror(err)}")
    return struct.unpack_from("<I", attr.raw, 4)[0]
