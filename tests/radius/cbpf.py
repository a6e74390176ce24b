"""A classic BPF interpreter for the opcodes `bridge.radius.steering` uses, with the kernel's
rules: 32-bit unsigned arithmetic, a load past the packet's end ends the program with 0, jumps
count from the next instruction."""

from __future__ import annotations

from bridge.radius import steering as s

MASK = 0xFFFFFFFF


class _PastTheEnd(Exception):
    pass


def _byte(packet: bytes, at: int) -> int:
    if not 0 <= at < len(packet):
        raise _PastTheEnd
    return packet[at]


def run(code: list[s.Instruction], packet: bytes) -> int:
    a = x = 0
    memory = [0] * 16
    pc = 0
    steps = 0
    try:
        while True:
            steps += 1
            assert steps <= len(code), "classic BPF cannot loop"
            op, jt, jf, k = code[pc]
            pc += 1
            if op == s.LD_W_LEN:
                a = len(packet)
            elif op == s.ST:
                memory[k] = a
            elif op == s.LDX_IMM:
                x = k
            elif op == s.LD_MEM:
                a = memory[k]
            elif op == s.SUB_K:
                a = (a - k) & MASK
            elif op == s.ADD_X:
                a = (a + x) & MASK
            elif op == s.XOR_X:
                a ^= x
            elif op == s.MOD_K:
                a = a % k
            elif op == s.TAX:
                x = a
            elif op == s.JA:
                pc += k
            elif op == s.JEQ_K:
                pc += jt if a == k else jf
            elif op == s.JGE_K:
                pc += jt if a >= k else jf
            elif op == s.JGE_X:
                pc += jt if a >= x else jf
            elif op == s.LDB_IND:
                a = _byte(packet, x + k)
            elif op == s.LD_W_ABS:
                a = int.from_bytes(bytes(_byte(packet, k + i) for i in range(4)), "big")
            elif op == s.LD_W_IND:
                a = int.from_bytes(bytes(_byte(packet, x + k + i) for i in range(4)), "big")
            elif op == s.LD_IMM:
                a = k
            elif op == s.TXA:
                a = x
            elif op == s.RET_A:
                return a
            elif op == s.RET_K:
                return k
            else:
                raise AssertionError(f"opcode {op:#x} not modelled")
    except _PastTheEnd:
        return 0
