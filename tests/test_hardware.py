"""Precision is resolved from what the hardware computes natively; every branch is covered
by substituting the capability checks, so the tests pass the same on any machine."""

import json
import os
import subprocess
import sys

import pytest
import torch

from rotnet import hardware
from rotnet.config import RuntimeConfig
from rotnet.runtime import Runtime

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_is_bf16_only_where_native(native, expected, capsys):
    assert hardware.resolve_precision("auto", CPU, native=native) == expected
    assert capsys.readouterr().err == ""


def test_explicit_bf16_without_native_support_runs_with_one_warning_line(capsys):
    assert hardware.resolve_precision("bf16", CPU, native=False) == "bf16"
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "emulated" in err and "fp32" in err


def test_explicit_bf16_with_native_support_is_silent(capsys):
    assert hardware.resolve_precision("bf16", CPU, native=True) == "bf16"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("native", [True, False])
def test_fp32_is_always_fp32(native, capsys):
    assert hardware.resolve_precision("fp32", CPU, native=native) == "fp32"
    assert capsys.readouterr().err == ""


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        hardware.resolve_precision("fp8", CPU, native=True)


def _substitute_cpu(monkeypatch, *, instructions: bool, onednn: bool, aten: str):
    monkeypatch.setattr(hardware, "cpu_has_bf16_instructions", lambda: instructions)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: aten)


@pytest.mark.parametrize("instructions, onednn, aten, isa, native", [
    (True, True, "AVX512", None, True),            # AVX512_BF16 / AMX machine
    (False, True, "AVX512", None, False),          # plain AVX-512: oneDNN says yes, but emulates
    (False, False, "AVX2", None, False),           # AVX2-only machine
    (True, False, "AVX2", "AVX2", False),          # bf16 machine with the AVX2 variables set
    (True, True, "AVX512", "AVX512_CORE", False),  # oneDNN capped below its bf16 ISA
    (True, True, "AVX2", None, False),             # ATen capped to AVX2
    (True, True, "AVX512", "AVX512_CORE_AMX", True),
])
def test_cpu_native_bf16_branches(monkeypatch, instructions, onednn, aten, isa, native):
    _substitute_cpu(monkeypatch, instructions=instructions, onednn=onednn, aten=aten)
    if isa is None:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    else:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert hardware.cpu_native_bf16() is native
    assert hardware.resolve_precision("auto", CPU) == ("bf16" if native else "fp32")


@pytest.mark.parametrize("available, supported, major, native", [
    (True, True, 9, True), (True, True, 8, True), (True, False, 7, False), (False, True, 9, False),
])
def test_cuda_native_bf16_branches(monkeypatch, available, supported, major, native):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: supported)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    assert hardware.native_bf16(CUDA) is native
    assert hardware.resolve_precision("auto", CUDA) == ("bf16" if native else "fp32")


def test_avx2_variables_resolve_auto_to_fp32_on_any_machine():
    """The real checks (nothing substituted) under the variables that make a bf16 CPU use
    AVX2 kernels only: detection must not be fooled into bf16."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    code = ("import json, torch; from rotnet import hardware; "
            "print(json.dumps([hardware.cpu_native_bf16(), "
            "hardware.resolve_precision('auto', torch.device('cpu'))]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == [False, "fp32"]


@pytest.mark.parametrize("native", [True, False])
def test_runtime_records_the_resolved_precision_never_auto(monkeypatch, native):
    monkeypatch.setattr(hardware, "cpu_native_bf16", lambda: native)
    runtime = Runtime(RuntimeConfig(device="cpu", precision="auto"))
    facts = runtime.describe()
    assert facts["precision"] == runtime.precision == ("bf16" if native else "fp32")
    assert facts["device"] == "cpu" and facts["native_bf16"] is native
    assert "auto" not in {str(v) for v in facts.values()}
    for key in ("device_name", "torch", "threads", "cpu_capability", "channels_last", "compile",
                "world_size"):
        assert key in facts


def test_bf16_autocast_gradients_track_fp32():
    """The bf16 numerics, on a size small enough that emulation costs no time: one
    forward/backward of a narrow NIN gives gradients pointing where fp32's do."""
    from rotnet.models import NINClassifier

    torch.manual_seed(0)
    model = NINClassifier(3, 4, width=0.125)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 4, (32,))

    def grads(bf16: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    reference, low = grads(False), grads(True)
    assert torch.isfinite(low).all()
    # bf16 keeps 8 bits of mantissa and BatchNorm amplifies it: the direction is what must hold.
    assert torch.nn.functional.cosine_similarity(low, reference, dim=0) > 0.95
