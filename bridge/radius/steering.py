"""Which worker a RADIUS datagram goes to: a classic BPF program for SO_ATTACH_REUSEPORT_CBPF.

With `[server] workers = N` every worker reads the same UDP port (SO_REUSEPORT). By default
the kernel picks the worker by a hash of the source address and port. That keeps a NAS that
retransmits from its own port on one worker, but not a NAS behind a UDP balancer: nginx sends
every datagram from a new port of its own, so a retransmission (answered from the duplicate
cache of the worker that has its first copy) or the next round of an EAP conversation (whose
TLS tunnel lives in one worker) could land on another worker.

So the supervisor binds the workers' sockets itself, in worker order (the program's answer
is an index into the port's sockets in the order they were added; the supervisor keeps them
open, so a restarted worker gets its predecessor's socket and the order never changes), and
attaches this program, which picks the worker from the datagram itself:

- an Access-Request that carries a State attribute whose first byte is a worker index goes to
  that worker: every worker starts its EAP States with its own index, so each round reaches
  the worker holding the conversation, whatever port it came from;
- any other datagram with a Calling-Station-Id (the device's MAC address, which access points
  send) goes to worker (its last 4 bytes) mod N: a device's conversations, and so its TLS
  session resumptions, meet the worker that holds its session, from any access point;
- any other with a User-Name (the card number, for PAP) goes to worker (its last 4 bytes)
  mod N: one card's requests meet the worker whose verified cache holds it, and identical
  requests join the check in flight there (an EAP conversation's first packet carries the
  outer identity, often the same for everyone, which is why the device comes first);
- any other datagram goes to worker (the Request Authenticator's four 32-bit words XORed) mod
  N: the Authenticator is 16 random bytes chosen per request, so requests spread evenly (and
  still spread from a NAS that fills part of it with a constant and counts in the rest).

Every rule reads only the datagram, so every copy of one request reaches the same worker.

The program runs on the UDP payload (the RADIUS packet). It looks at most `MAX_ATTRIBUTES`
attributes for State (beyond that, or on a malformed attribute, it falls back to the
Authenticator); a packet shorter than 20 bytes gives worker 0 (a load past the end ends a
classic BPF program with 0), which drops it like any other worker would. Pure: the program as
data; `bridge.runtime.listeners` attaches it. The tests run it in an interpreter against
`expected_worker` and in the kernel.
"""

from __future__ import annotations

import struct
from typing import Final

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h): only those used here.
LD_W_LEN: Final = 0x80  # A = packet length
ST: Final = 0x02  # M[k] = A
LDX_IMM: Final = 0x01  # X = k
LD_MEM: Final = 0x60  # A = M[k]
SUB_K: Final = 0x14  # A -= k
ADD_X: Final = 0x0C  # A += X
XOR_X: Final = 0xAC  # A ^= X
MOD_K: Final = 0x94  # A %= k
TAX: Final = 0x07  # X = A
JA: Final = 0x05  # pc += k
JEQ_K: Final = 0x15  # pc += (A == k) ? jt : jf
JGE_K: Final = 0x35  # pc += (A >= k) ? jt : jf
JGE_X: Final = 0x3D  # pc += (A >= X) ? jt : jf
LDB_IND: Final = 0x50  # A = P[X + k] (one byte)
LD_W_ABS: Final = 0x20  # A = P[k:k+4] (big-endian word)
LD_W_IND: Final = 0x40  # A = P[X+k:X+k+4] (big-endian word)
LD_IMM: Final = 0x00  # A = k
TXA: Final = 0x87  # A = X
RET_A: Final = 0x16  # return A
RET_K: Final = 0x06  # return k

Instruction = tuple[int, int, int, int]  # (code, jt, jf, k): struct sock_filter

USER_NAME: Final = 1
STATE: Final = 24
CALLING_STATION_ID: Final = 31
HEADER: Final = 20  # Code, Identifier, Length, Authenticator
MAX_ATTRIBUTES: Final = 64
MAX_WORKERS: Final = 255  # a State's first byte names the worker


def _tail(kind: int, value: int, seen: int) -> list[Instruction]:
    """For the attribute at X, if it is `kind` with at least 4 bytes of value: M[value] = its
    last 4 bytes, M[seen] = 1. X is kept (through M[4]); A is not."""
    block: list[Instruction] = [
        (LDB_IND, 0, 0, 1),  # A = its length
        (JGE_K, 0, 13, 6),  # at least 4 bytes of value? else skip the rest of this block
        (ADD_X, 0, 0, 0),
        (SUB_K, 0, 0, 4),
        (ST, 0, 0, 3),  # M[3] = where its last 4 bytes start
        (TXA, 0, 0, 0),
        (ST, 0, 0, 4),  # keep X
        (LD_MEM, 0, 0, 3),
        (TAX, 0, 0, 0),
        (LD_W_IND, 0, 0, 0),
        (ST, 0, 0, value),
        (LD_IMM, 0, 0, 1),
        (ST, 0, 0, seen),
        (LD_MEM, 0, 0, 4),
        (TAX, 0, 0, 0),  # X back on the attribute
    ]
    assert block[1][2] == len(block) - 2
    return [(LDB_IND, 0, 0, 0), (JEQ_K, 0, len(block), kind), *block]


def program(workers: int) -> list[Instruction]:
    """The steering program for `workers` sockets (2 to MAX_WORKERS)."""
    if not 2 <= workers <= MAX_WORKERS:
        raise ValueError(f"steering needs 2 to {MAX_WORKERS} workers, not {workers}")
    # M[0]: the packet's length; M[1]: the last Calling-Station-Id's last 4 bytes, M[2]: 1 once
    # one was seen; M[5], M[6]: the same for User-Name; M[3], M[4]: scratch. (The kernel
    # refuses a program that reads M[k] before writing it.)
    code: list[Instruction] = [
        (LD_W_LEN, 0, 0, 0),
        (ST, 0, 0, 0),
        (LD_IMM, 0, 0, 0),
        (ST, 0, 0, 1),
        (ST, 0, 0, 2),
        (ST, 0, 0, 5),
        (ST, 0, 0, 6),
        (LDX_IMM, 0, 0, HEADER),  # X: the attribute being looked at
    ]
    # Jumps to the two exits are written as `JA` (32-bit offset) once the exits' places are
    # known; conditional jumps only ever skip a few instructions (their offsets are 8-bit).
    to_found: list[int] = []
    to_fallback: list[int] = []
    for _ in range(MAX_ATTRIBUTES):
        code += [
            (LD_MEM, 0, 0, 0),  # A = length of the packet
            (SUB_K, 0, 0, 2),  # A = length - 2
            (JGE_X, 1, 0, 0),  # room for this attribute's type and length bytes?
        ]
        to_fallback.append(len(code))
        code += [
            (JA, 0, 0, 0),  # no: no State in the packet
            (LDB_IND, 0, 0, 0),  # A = type
            (JEQ_K, 0, 1, STATE),
        ]
        to_found.append(len(code))
        code += [
            (JA, 0, 0, 0),
            *_tail(CALLING_STATION_ID, 1, 2),
            *_tail(USER_NAME, 5, 6),
            (LDB_IND, 0, 0, 1),  # A = this attribute's length
            (JGE_K, 1, 0, 2),
        ]
        to_fallback.append(len(code))
        code += [
            (JA, 0, 0, 0),  # malformed (length < 2)
            (ADD_X, 0, 0, 0),
            (TAX, 0, 0, 0),  # X = the next attribute
        ]
    to_fallback.append(len(code))
    code.append((JA, 0, 0, 0))  # more attributes than looked at
    found = len(code)
    code += [
        (LDB_IND, 0, 0, 1),  # the State's length: at least one byte of value?
        (JGE_K, 1, 0, 3),
        (JA, 0, 0, 3),  # no: fallback (3 ahead)
        (LDB_IND, 0, 0, 2),  # A = the State's first byte
        (JGE_K, 1, 0, workers),  # not a worker index (not one of our States): fallback
        (RET_A, 0, 0, 0),
    ]
    fallback = len(code)
    # The Request Authenticator's four 32-bit words XORed: a NAS that fills part of it with a
    # constant (a run or boot id) and counts in another part still spreads over the workers.
    authenticator: list[Instruction] = [(LD_W_ABS, 0, 0, 4)]
    for offset in (8, 12, 16):
        authenticator += [(TAX, 0, 0, 0), (LD_W_ABS, 0, 0, offset), (XOR_X, 0, 0, 0)]
    code += [
        (LD_MEM, 0, 0, 2),
        (JEQ_K, 2, 0, 0),  # no Calling-Station-Id: try User-Name
        (LD_MEM, 0, 0, 1),
        (JA, 0, 0, 4 + len(authenticator)),
        (LD_MEM, 0, 0, 6),
        (JEQ_K, 2, 0, 0),  # no User-Name either: by the Authenticator
        (LD_MEM, 0, 0, 5),
        (JA, 0, 0, len(authenticator)),
        *authenticator,
        (MOD_K, 0, 0, workers),
        (RET_A, 0, 0, 0),
    ]
    for at in to_found:
        code[at] = (JA, 0, 0, found - at - 1)
    for at in to_fallback:
        code[at] = (JA, 0, 0, fallback - at - 1)
    return code


def encode(code: list[Instruction]) -> bytes:
    """The program as the kernel reads it: an array of struct sock_filter."""
    return b"".join(struct.pack("=HBBI", c, jt, jf, k) for c, jt, jf, k in code)


def expected_worker(packet: bytes, workers: int) -> int:
    """What `program(workers)` answers for `packet`, written plainly (the tests' reference)."""
    at = HEADER
    tails: dict[int, int] = {}  # attribute type -> the last such attribute's last 4 bytes
    for _ in range(MAX_ATTRIBUTES):
        if at + 2 > len(packet):
            break
        kind, length = packet[at], packet[at + 1]
        if kind == STATE:
            if length < 3:
                break
            if at + 2 >= len(packet):
                return 0  # the value's first byte is past the end: the program ends with 0
            if packet[at + 2] < workers:
                return packet[at + 2]
            break
        if kind in (CALLING_STATION_ID, USER_NAME) and length >= 6:
            if at + length > len(packet):
                return 0  # its last 4 bytes are past the end
            tails[kind] = int.from_bytes(packet[at + length - 4 : at + length], "big")
        if length < 2:
            break
        at += length
    for kind in (CALLING_STATION_ID, USER_NAME):
        if kind in tails:
            return tails[kind] % workers
    if len(packet) < HEADER:
        return 0  # the Authenticator's last word is past the end
    words = [int.from_bytes(packet[at : at + 4], "big") for at in (4, 8, 12, 16)]
    return (words[0] ^ words[1] ^ words[2] ^ words[3]) % workers
