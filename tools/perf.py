"""Pure parts of ``wingmark benchmark``: FLOPs counted from an ONNX graph (``model_store.flops``, where the
manifests' records count them too), the CPU's fp32 peak.

Peak: ``cores * clock * FMA units * 2 * fp32 lanes`` where lanes follow the widest vector flag
(avx512f 16, avx2/fma 8, sse 4). FMA units per core are not visible in /proc/cpuinfo: AVX-512 server
cores (Xeon Skylake-SP and later, Gold/Platinum) have two 512-bit FMA units, some parts one; the
assumption is a parameter and is written into every report.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from model_store.flops import count_flops

__all__ = ["CpuPeak", "count_flops", "cpu_peak", "parse_cpuinfo"]


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """Processors, flags (of the first processor), clock (MHz, the first ``cpu MHz``) and model name."""
    processors = len(re.findall(r"^processor\s*:", text, flags=re.M))
    flags_m = re.search(r"^flags\s*:\s*(.*)$", text, flags=re.M)
    mhz_m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, flags=re.M)
    name_m = re.search(r"^model name\s*:\s*(.*)$", text, flags=re.M)
    return {
        "processors": processors,
        "flags": set(flags_m.group(1).split()) if flags_m else set(),
        "mhz": float(mhz_m.group(1)) if mhz_m else None,
        "model_name": name_m.group(1).strip() if name_m else "",
    }


@dataclass(frozen=True)
class CpuPeak:
    cores: int
    ghz: float
    isa: str  # avx512f | avx2 | sse
    lanes: int  # fp32 lanes per vector
    fma_units: int
    gflops: float  # cores * ghz * fma_units * 2 * lanes
    assumption: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_peak(
    text: str, cores: int | None = None, *, fma_units: int | None = None, ghz: float | None = None
) -> CpuPeak:
    """The fp32 peak of ``cores`` cores described by /proc/cpuinfo ``text``.

    ``fma_units`` default: 2 for AVX-512 and for AVX2 cores (one per 512-bit / 256-bit port pair on
    current server parts), 1 without FMA. ``ghz`` default: the cpuinfo clock (a VM reports its base).
    """
    info = parse_cpuinfo(text)
    flags = info["flags"]
    n = cores if cores is not None else max(1, info["processors"])
    if "avx512f" in flags:
        isa, lanes = "avx512f", 16
    elif "avx2" in flags or "avx" in flags:
        isa, lanes = ("avx2" if "avx2" in flags else "avx"), 8
    else:
        isa, lanes = "sse", 4
    has_fma = "fma" in flags or isa == "avx512f"
    units = fma_units if fma_units is not None else (2 if has_fma else 1)
    flops_per_unit = 2 if has_fma else 1  # one fused multiply-add = 2 FLOPs; else mul or add alone
    clock = ghz if ghz is not None else (info["mhz"] or 0.0) / 1000.0
    gflops = n * clock * units * flops_per_unit * lanes
    assumption = (
        f"{n} cores x {clock:.2f} GHz x {units} FMA units x {flops_per_unit} x {lanes} fp32 lanes ({isa}); "
        f"FMA units per core are assumed, not read (cpuinfo does not show them); clock from "
        f"{'the caller' if ghz is not None else '/proc/cpuinfo (base clock in a VM; turbo may be higher)'}"
    )
    return CpuPeak(n, clock, isa, lanes, units, gflops, assumption)
