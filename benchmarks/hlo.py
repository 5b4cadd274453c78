"""Reading XLA's compiled HLO text: the entry computation's largest operations by bytes (benchmarks/aot.py's
report) and where each instruction came from in the JAX program (benchmarks/profile.py's table)."""

from __future__ import annotations

import re

_ELEMENT_BYTES = {"pred": 1, "s8": 1, "u8": 1, "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4,
                  "u32": 4, "f64": 8, "s64": 8, "u64": 8}
_ARRAY = re.compile(r"\b(pred|[suf]\d+|bf16)\[([\d,]*)\]")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*)$")
_OPCODE = re.compile(r" ([a-z][a-z0-9\-]*)\(")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "copy-done", "after-all"}
# an instruction of any computation, `%name = shape op(...)`, with the JAX operation it came from in its metadata
_NAMED = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ")
_SOURCE = re.compile(r'op_name="(?:jit\([^)]*\)/)?([^"]*)"')


def _shape_bytes(shape: str) -> int:
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        total += count * _ELEMENT_BYTES.get(dtype, 4)
    return total


def top_operations(hlo_text: str, n: int | None = 8) -> list[dict]:
    """The entry computation's operations by the logical bytes they read and write (operands + result,
    before the TPU's tiling pads them), largest first (n of them; None: all): the targets of the next
    change."""
    entry = hlo_text[hlo_text.index("\nENTRY "):]
    entry = entry[:entry.index("\n}")]
    sizes, ops = {}, []
    for line in entry.splitlines()[1:]:
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, rhs = match.groups()
        # the opcode: the first "name(" outside the result's shape, whose tuples and tilings nest parentheses
        call = next((m for m in _OPCODE.finditer(rhs)
                     if rhs.count("(", 0, m.start()) == rhs.count(")", 0, m.start())), None)
        if call is None:
            continue
        shape, opcode = rhs[:call.start()], call.group(1)
        operands, _, rest = rhs[call.end():].partition(")")
        sizes[name] = _shape_bytes(shape)
        if opcode in _FREE:
            continue
        read = sum(sizes.get(o, 0) for o in re.findall(r"%([\w.\-]+)", operands))
        source = re.search(r'op_name="([^"]+)"', rest)
        ops.append({"name": name, "opcode": opcode, "bytes": read + sizes[name], "shape": _ARRAY.sub(
                        lambda m: f"{m.group(1)}[{m.group(2)}]", re.sub(r"\{[^}]*\}", "", shape)),
                    "source": source.group(1) if source else ""})
    return sorted(ops, key=lambda op: -op["bytes"])[:n]


def instruction_sources(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Every instruction of every computation: its name -> (its result's shape, the JAX operation it came
    from, without the jit(...) prefix; "" where the metadata names none)."""
    instructions = {}
    for line in hlo_text.splitlines():
        if match := _NAMED.match(line):
            source = _SOURCE.search(line)
            instructions[match[1]] = (match[2], source[1] if source else "")
    return instructions
