"""What this machine's CPU is and can do, read from /proc/cpuinfo (Linux; empty elsewhere).

Recorded with every benchmark: the same code ranks differently on an AVX2-only CPU and on one
with AVX-512 and VNNI (onnxruntime's int8 GEMMs have a fast path only with the latter).
"""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
VECTOR_EXTENSIONS = ("avx512f", "avx2", "neon", "asimd")  # widest first
INT8_DOT_PRODUCTS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _fields(cpuinfo: Path) -> list[tuple[str, str]]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return []
    return [(key.strip(), value.strip()) for key, sep, value in (line.partition(":") for line in text.splitlines()) if sep]


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    return _flags_of(_fields(cpuinfo))


def _flags_of(fields: list[tuple[str, str]]) -> set[str]:
    return {flag for key, value in fields if key in ("flags", "Features") for flag in value.split()}


def int8_dot_products(cpuinfo: Path = CPUINFO) -> list[str]:
    """The int8 dot-product instructions this CPU reports."""
    return _int8_among(cpu_flags(cpuinfo))


def _int8_among(flags: set[str]) -> list[str]:
    return [flag for flag in INT8_DOT_PRODUCTS if flag in flags]


def describe_int8(cpuinfo: Path = CPUINFO) -> str:
    found = int8_dot_products(cpuinfo)
    return f"CPU int8 dot-product instructions: {', '.join(found)}" if found else "CPU without VNNI or AMX int8"


def describe_cpu(cpuinfo: Path = CPUINFO) -> str:
    """e.g. `AMD EPYC, avx512f, avx512_vnni`: the model name, the widest vector extension, int8 dot products."""
    fields = _fields(cpuinfo)  # read once
    model = next((value for key, value in fields if key == "model name"), "CPU model unknown")
    flags = _flags_of(fields)
    widest = next((extension for extension in VECTOR_EXTENSIONS if extension in flags), None)
    return ", ".join([model, *([widest] if widest else []), *_int8_among(flags)])
