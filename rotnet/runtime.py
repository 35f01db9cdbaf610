"""Where and how a run computes: device, precision and memory format, resolved once from a
`RuntimeConfig` (never "auto" afterwards), and the evaluation batch that suits the device."""

from __future__ import annotations

import os

import torch
from torch import nn

from rotnet import hardware
from rotnet.config import RuntimeConfig
from rotnet.distributed import from_environment

# Test images per evaluation batch (each in all its rotations for the pretext). A GPU wants
# big batches; on a CPU activations that stay in cache win: on the 2-core AVX2 EPYC an
# evaluation of the quick b4-r4 RotNet took 2.6 s at 500, 1.4 s at 64, 1.0 s at 32, 1.0 at 16.
EVAL_BATCH = {"cuda": 500, "cpu": 32}


class Runtime:
    """Device, precision and memory format resolved once from a RuntimeConfig."""

    def __init__(self, config: RuntimeConfig):
        self.config = config
        name = str(hardware.resolve_device(config.device))
        hardware.check_device_available(name)  # before any process group or file
        self.world = from_environment()  # described only: `distributed.join` joins it
        if self.world.enabled and name == "cuda":
            name = f"cuda:{self.world.local_rank}"  # torchrun: one GPU per process
        self.device = torch.device(name)
        self.precision = hardware.resolve_precision(config.precision, self.device)
        self.channels_last = config.channels_last
        self.eval_batch = EVAL_BATCH.get(self.device.type, EVAL_BATCH["cpu"])
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def describe(self) -> dict:
        """What actually runs (never "auto"): recorded with every run beside its config."""
        return {**hardware.describe(self.device), "precision": self.precision,
                "channels_last": self.channels_last, "compile": self.config.compile,
                "deterministic": self.config.deterministic, "world_size": self.world.world_size,
                "eval_batch": self.eval_batch}

    def autocast(self):
        enabled = self.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_module(self, module: nn.Module) -> nn.Module:
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def maybe_compile(self, module: nn.Module) -> nn.Module:
        return torch.compile(module) if self.config.compile else module
