"""Float or INT8 (runtime.precision): the CPU flags given as input, a real store with and without
the int8 variant of the version to serve."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_store.store import ModelStore
from runtime.precision import INT8_FLAGS, choose_variant, cpu_flags, int8_units
from tests.service.modelgen import publish_test_model

VNNI_CPU = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16
"""
AVX2_CPU = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
"""
ARM_CPU = """processor\t: 0
Features\t: fp asimd evtstrm aes crc32 asimddp
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """m@1 and m@2 float, m-int8@1 only (the int8 variant of version 1, not of 2)."""
    root = tmp_path_factory.mktemp("store")
    publish_test_model(root, "aflw19", name="m", version="1", sizes=(64,))
    publish_test_model(root, "aflw19", name="m", version="2", sizes=(64,))
    publish_test_model(root, "aflw19", name="m-int8", version="1", sizes=(64,))
    return ModelStore(root)


def test_cpu_flags_are_read_from_cpuinfo_text() -> None:
    assert "avx512_vnni" in cpu_flags(VNNI_CPU) and "avx2" in cpu_flags(VNNI_CPU)
    assert "asimddp" in cpu_flags(ARM_CPU)  # ARM's "Features" line
    assert cpu_flags("no flags here") == frozenset()


def test_int8_units_are_the_dot_product_flags() -> None:
    assert int8_units(cpu_flags(VNNI_CPU)) == ["avx512_vnni"]
    assert int8_units(cpu_flags(AVX2_CPU)) == []
    assert int8_units(["amx_int8", "avx_vnni", "sse2"]) == ["amx_int8", "avx_vnni"]
    assert set(INT8_FLAGS) == {"avx512_vnni", "avx_vnni", "amx_int8"}


@pytest.mark.parametrize("flag", INT8_FLAGS)
def test_auto_picks_int8_where_the_cpu_has_int8_units(store: ModelStore, flag: str) -> None:
    choice = choose_variant(store, "m", "1", setting="auto", flags={"avx2", flag})
    assert (choice.name, choice.version, choice.precision) == ("m-int8", "1", "int8")
    assert flag in choice.reason and choice.float_name == "m"


def test_auto_stays_float_without_int8_units(store: ModelStore) -> None:
    choice = choose_variant(store, "m", "1", setting="auto", flags=cpu_flags(AVX2_CPU))
    assert (choice.name, choice.precision) == ("m", "float")
    assert "no int8 dot-product unit" in choice.reason


def test_a_variant_of_another_version_is_never_used(store: ModelStore) -> None:
    """m@2 (say, new defaults) has no int8 variant yet: float 2, not int8 1."""
    choice = choose_variant(store, "m", "2", setting="auto", flags=cpu_flags(VNNI_CPU))
    assert (choice.name, choice.version, choice.precision) == ("m", "2", "float")
    assert "no m-int8@2" in choice.reason


def test_settings_override_the_cpu(store: ModelStore) -> None:
    forced_float = choose_variant(store, "m", "1", setting="float", flags=cpu_flags(VNNI_CPU))
    assert (forced_float.name, forced_float.precision) == ("m", "float")
    forced_int8 = choose_variant(store, "m", "1", setting="int8", flags=cpu_flags(AVX2_CPU))
    assert (forced_int8.name, forced_int8.precision) == ("m-int8", "int8")
    # run as forced, but without an int8 dot-product unit the reason warns that it saturates
    assert forced_int8.saturates and "WARNING" in forced_int8.reason and "saturate" in forced_int8.reason
    on_vnni = choose_variant(store, "m", "1", setting="int8", flags=cpu_flags(VNNI_CPU))
    assert (on_vnni.name, on_vnni.reason, on_vnni.saturates) == ("m-int8", "precision setting is int8", False)
    # int8 asked for where none is published: float, and the reason says so
    missing = choose_variant(store, "m", "2", setting="int8", flags=cpu_flags(VNNI_CPU))
    assert (missing.name, missing.precision) == ("m", "float") and "no m-int8@2" in missing.reason


def test_only_onnx_runtime_runs_the_int8_variant(store: ModelStore) -> None:
    choice = choose_variant(store, "m", "1", flags=cpu_flags(VNNI_CPU), backend="tensorrt")
    assert (choice.name, choice.precision) == ("m", "float") and "tensorrt" in choice.reason


def test_an_int8_name_is_run_as_asked(store: ModelStore) -> None:
    choice = choose_variant(store, "m-int8", "1", setting="float", flags=())
    assert (choice.name, choice.precision, choice.float_name) == ("m-int8", "int8", "m")
    assert choice.saturates and "WARNING" in choice.reason  # no int8 unit among the flags
    vnni = choose_variant(store, "m-int8", "1", setting="float", flags=cpu_flags(VNNI_CPU))
    assert (vnni.reason, vnni.saturates) == ("asked for by name", False)


def test_this_machines_flags_are_readable() -> None:
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("no /proc/cpuinfo")
    assert cpu_flags()  # a Linux CPU always lists flags


def test_the_facade_loads_the_variant_when_asked(store: ModelStore) -> None:
    from runtime import Landmarker

    for precision, expected in [("float", "m"), ("int8", "m-int8")]:
        lm = Landmarker.from_store("m", version="1", store=store, detector=None, precision=precision)
        try:
            assert (lm.name, lm.version) == (expected, "1")
        finally:
            lm.close()
