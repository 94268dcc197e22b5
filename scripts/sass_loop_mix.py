#!/usr/bin/env python3
"""The instruction mix of a kernel's hot loop, from its SASS.

    sass_loop_mix.py CUOBJDUMP CUBIN KERNEL [--innermost] [--max-per-mma N] [--forbid OP ...]
    sass_loop_mix.py CUOBJDUMP CUBIN KERNEL --loops OP


Disassembles KERNEL from CUBIN (cuobjdump -sass, which needs nvdisasm on PATH),
takes the innermost loop that contains the kernel's tensor-core (IMMA, HMMA) or dp4a
instructions (the backward branch closing over the first of them; with
--innermost, the shortest span a backward branch closes over any of them, for
loops whose first ones a prologue issues), and prints
one line: instructions per iteration, per tensor-core instruction, and the
opcode counts. With --forbid, exits 1 when any listed opcode (e.g. I2FP, I2F:
the slow integer → float conversions) appears in that loop; with --max-per-mma,
when the loop issues more than N instructions per IMMA/HMMA (the issue slots
the tensor cores' feeding costs), or spills (LDL/STL) inside it. With --loops OP, prints every innermost loop that holds
OP instead (e.g. FFMA: the arithmetic loops of an f32 kernel) with its mix and
its shared-memory loads per OP.
"""
import collections
import re
import subprocess
import sys

HOT = ("IMMA", "IDP", "HMMA", "HGMMA")


def instructions(cuobjdump, cubin, kernel):
    sass = subprocess.run(
        [cuobjdump, "-sass", "-fun", kernel, cubin], check=True, capture_output=True, text=True
    ).stdout
    out = []
    for line in sass.splitlines():
        m = re.match(r"\s+/\*([0-9a-f]+)\*/\s+(.*?)\s*;", line)
        if m:
            text = re.sub(r"^@!?U?P\w+\s+", "", m.group(2))
            out.append((int(m.group(1), 16), text))
    return out


def hot_loop(code):
    hot = [i for i, (_, text) in enumerate(code) if text.split()[0].split(".")[0] in HOT]
    if not hot:
        return None
    first = code[hot[0]][0]
    for i in range(hot[0], len(code)):
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", code[i][1])
        if m and int(m.group(1), 16) <= first:
            target = int(m.group(1), 16)
            start = next(j for j, (addr, _) in enumerate(code) if addr == target)
            return code[start : i + 1]
    return None


def hot_loop_innermost(code):
    """--innermost: the shortest span a backward branch closes over any
    tensor-core instruction, for a software-pipelined loop whose first ones
    are issued in a prologue before it."""
    best = None
    for i, (_, text) in enumerate(code):
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
        if not m or int(m.group(1), 16) > code[i][0]:
            continue
        target = int(m.group(1), 16)
        start = next((j for j, (addr, _) in enumerate(code) if addr == target), None)
        if start is None or not any(opcode(t) in HOT for _, t in code[start : i + 1]):
            continue
        if best is None or i - start < best[1] - best[0]:
            best = (start, i)
    return None if best is None else code[best[0] : best[1] + 1]


def innermost_loops(code):
    """(start, end) index pairs of backward branches whose body holds no other."""
    loops = []
    for i, (_, text) in enumerate(code):
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= code[i][0]:
            target = int(m.group(1), 16)
            start = next((j for j, (addr, _) in enumerate(code) if addr == target), None)
            if start is not None:
                loops.append((start, i))
    nested = lambda a, b: any(a <= c and d <= b for c, d in loops if (c, d) != (a, b))
    return [(a, b) for a, b in loops if not nested(a, b)]


def opcode(text):
    return text.split()[0].split(".")[0]


def main():
    args = sys.argv[1:]
    if "--loops" in args:
        at = args.index("--loops")
        op = args[at + 1]
        cuobjdump, cubin, kernel = args[:at]
        code = instructions(cuobjdump, cubin, kernel)
        for a, b in innermost_loops(code):
            counts = collections.Counter(opcode(t) for _, t in code[a : b + 1])
            if counts[op]:
                mix = ", ".join(f"{o} {n}" for o, n in counts.most_common(8))
                print(f"{kernel}: loop of {b - a + 1}: {mix}; LDS per {op} {counts['LDS'] / counts[op]:.2f}")
        return 0
    forbid = []
    if "--forbid" in args:
        at = args.index("--forbid")
        forbid = args[at + 1 :]
        args = args[:at]
    max_per_mma = None
    if "--max-per-mma" in args:
        at = args.index("--max-per-mma")
        max_per_mma = float(args[at + 1])
        args = args[:at] + args[at + 2 :]
    innermost = "--innermost" in args
    if innermost:
        args.remove("--innermost")
    cuobjdump, cubin, kernel = args
    code = instructions(cuobjdump, cubin, kernel)
    loop = hot_loop_innermost(code) if innermost else hot_loop(code)
    if loop is None:
        print(f"{kernel}: no loop around IMMA/IDP instructions found")
        return 1
    counts = collections.Counter(text.split()[0].split(".")[0] for _, text in loop)
    mix = ", ".join(f"{op} {n}" for op, n in counts.most_common())
    mma = counts["IMMA"] + counts["HMMA"] + counts["HGMMA"]
    per = f", {len(loop) / mma:.2f} per mma" if mma else ""
    print(f"{kernel}: {len(loop)} instructions per iteration{per}: {mix}")
    bad = [op for op in forbid if counts[op]]
    if bad:
        print(f"{kernel}: forbidden in the hot loop: {', '.join(bad)}")
        return 1
    if max_per_mma is not None:
        if not mma or len(loop) / mma > max_per_mma:
            print(f"{kernel}: more than {max_per_mma} instructions per mma in the hot loop")
            return 1
        if counts["LDL"] or counts["STL"]:
            print(f"{kernel}: local memory (spills) in the hot loop")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
