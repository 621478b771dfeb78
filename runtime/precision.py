"""Float or INT8: which variant of a model to run on this CPU, and why.

``wingmark quantize NAME@VERSION --publish`` puts ``NAME-int8`` (same version) beside a float model.
ONNX Runtime's int8 convolutions only beat float32 on CPUs with int8 dot-product units (x86's VNNI,
in AVX-512 or AVX form, and AMX); without them they run about as fast as float32 and lose accuracy.
So ``auto`` picks the int8 variant where ``/proc/cpuinfo``'s flags show such a unit and the variant
exists for the very version to be served, and float everywhere else; ``float`` and ``int8`` force
it (``int8`` still falls back to float where no variant is published, and says so). Without such a unit
the int8 kernels' 16-bit intermediate sums saturate (x86 AVX2 / AVX-512 without VNNI): int8 forced
there runs, and its reason (``VariantChoice.saturates``) says the landmarks are far off (docs/models.md:
``faceapi-ibug68-int8`` 4.9.0 on an AVX2 CPU reads 10.9 % NME where the float model reads 4.68 %).

    choice = choose_variant(store, "cnn67-ibug68", "2.0.0", setting="auto")
    choice.name, choice.precision, choice.reason

Every function takes the flags as input, so the selection is tested without the CPU it describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model_store.store import ModelStore

__all__ = [
    "INT8_FLAGS",
    "INT8_SUFFIX",
    "PrecisionSetting",
    "VariantChoice",
    "choose_variant",
    "cpu_flags",
    "int8_units",
]

PrecisionSetting = Literal["auto", "float", "int8"]

INT8_SUFFIX = "-int8"
# /proc/cpuinfo flags of int8 dot-product units ONNX Runtime's int8 kernels use
INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags: those of ``cpuinfo`` (the text of ``/proc/cpuinfo``), read from the
    file when None (empty where it cannot be read, e.g. not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def int8_units(flags: Iterable[str]) -> list[str]:
    """The int8 dot-product units among ``flags`` (:data:`INT8_FLAGS`), sorted."""
    present = set(flags)
    return sorted(f for f in INT8_FLAGS if f in present)


@dataclass(frozen=True)
class VariantChoice:
    """The model to load in place of a float model, its precision and why."""

    name: str  # the model to load: the float name or NAME-int8
    version: str
    precision: Literal["float", "int8"]
    reason: str
    float_name: str  # the model asked for
    saturates: bool = False  # int8 on a CPU without an int8 dot-product unit: the landmarks are far off

    def to_dict(self) -> dict[str, str]:
        return {
            "precision": self.precision,
            "precision_reason": self.reason,
            "float_model": self.float_name,
        }


def choose_variant(
    store: ModelStore,
    name: str,
    version: str,
    *,
    setting: PrecisionSetting = "auto",
    flags: Iterable[str] | None = None,
    backend: str = "onnxruntime",
) -> VariantChoice:
    """Which of ``name@version`` (a float model, resolved) and ``NAME-int8@version`` to run.

    ``flags``: the CPU's flags (default :func:`cpu_flags`). A name that already ends in ``-int8`` is
    run as asked. Only the ONNX Runtime backend runs the int8 variants (TensorRT builds its own).
    """
    units = int8_units(cpu_flags() if flags is None else flags)
    if name.endswith(INT8_SUFFIX):
        why, saturates = _int8_reason("asked for by name", units)
        return VariantChoice(name, version, "int8", why, name.removesuffix(INT8_SUFFIX), saturates)
    if setting == "float":
        return VariantChoice(name, version, "float", "precision setting is float", name)
    if backend != "onnxruntime":
        return VariantChoice(name, version, "float", f"the {backend} backend runs the float model", name)
    variant = name + INT8_SUFFIX
    has_variant = variant in store.list_models() and version in store.list_versions(variant)
    if setting == "auto" and not units:
        why = f"auto: the CPU has no int8 dot-product unit ({', '.join(INT8_FLAGS)})"
        return VariantChoice(name, version, "float", why, name)
    if not has_variant:
        why = f"{setting}: no {variant}@{version} in the store (wingmark quantize)"
        return VariantChoice(name, version, "float", why, name)
    if setting == "auto":
        return VariantChoice(variant, version, "int8", f"auto: the CPU has {', '.join(units)}", name)
    why, saturates = _int8_reason("precision setting is int8", units)
    return VariantChoice(variant, version, "int8", why, name, saturates)


def _int8_reason(why: str, units: Sequence[str]) -> tuple[str, bool]:
    """An int8 choice's reason, and whether the CPU lacks an int8 dot-product unit (it saturates)."""
    if units:
        return why, False
    return (
        f"{why}; WARNING: the CPU has no int8 dot-product unit ({', '.join(INT8_FLAGS)}): ONNX Runtime's "
        "int8 convolutions saturate without one and the landmarks are far off (use float)",
        True,
    )
