"""Training throughput of the project path vs a naive PyTorch pipeline, and the wall time
the whole paper protocol would take on this device.

    python bench/throughput.py [--device auto|cpu|cuda] [--precision auto|bf16|fp32]
                               [--seconds S] [--width W] [--compile] [--workers N]
                               [--json OUT] [--profile]

(a) naive: a map-style Dataset that augments and rotates one sample at a time, a
    DataLoader, fp32, NCHW, eager. (b) the project path: `rotnet.engine.train_one_epoch`
    (uint8 data on the device, batched crop/flip/rotation, channels_last, and the precision
    `runtime.precision` resolves to: bf16 autocast only where the device computes bf16
    natively). (c) the same two ways for a non-linear probe on frozen block 2. Rates are
images/s (a rotated copy counts as one image) and GFLOP/s from a FLOP count of the model,
compared with the matmul roof of the precision the project path ran in, measured in the
same run on the same device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from rotnet.config import OptimConfig, RuntimeConfig
from rotnet.data import load_data
from rotnet.engine import DeviceData, Hooks, Task, make_optimizer, train_one_epoch
from rotnet.runtime import Runtime
from rotnet.models import NINBackbone, NINClassifier, block_output_shape, conv_probe, nonlinear_probe
from rotnet.rotations import rotation_set

BATCH, K, EPOCH_IMAGES = 128, 4, 50_000
TRAIN_POOL = 2048  # generated images to draw batches from; the rate does not depend on it


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- FLOP counts (per image; FlopCounterMode counts conv / matmul, not BN / ReLU / pools) ----

def train_flops(model: torch.nn.Module, frozen: torch.nn.Module | None = None) -> float:
    """FLOPs of one training step per image: frozen forward (no grad) + model forward/backward.
    Counted on CPU at batch 2 (BatchNorm1d refuses batch 1 in train mode)."""
    x = torch.zeros(2, 3, 32, 32)
    with FlopCounterMode(display=False) as counter:
        if frozen is not None:
            with torch.no_grad():
                x = frozen(x)
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def pretrain_flops(blocks: int, width: float) -> float:
    return train_flops(NINClassifier(blocks, K, width=width))


def probe_flops(block: int, width: float, kind: str = "nonlinear", finetune: bool = False) -> float:
    backbone = NINBackbone(block, width=width)
    if kind == "conv":
        head = conv_probe(backbone.out_channels[-1], 10, width)
    else:
        head = nonlinear_probe(math.prod(block_output_shape(backbone, block, 3)), 10)
    if finetune:
        return train_flops(torch.nn.Sequential(backbone, head))
    return train_flops(head, frozen=backbone.eval())


# ---- the device's roof -------------------------------------------------------------------

def matmul_roof(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of a square matmul big enough to saturate the device."""
    n = 4096 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    a @ b  # warm-up: library init, kernel selection
    sync(device)
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        if device.type == "cuda" and runs % 10:
            continue  # queue a few before syncing
        sync(device)
    sync(device)
    return 2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9


# ---- (a) the naive pipeline: per-sample transforms in a Dataset ---------------------------

class NaiveDataset(Dataset):
    """What a torchvision-style pipeline does: one sample at a time, float, in the loader."""

    def __init__(self, images, labels, mean, std, rotate: bool):
        self.images, self.labels, self.rotate = images, labels, rotate
        self.mean = torch.tensor(mean)[:, None, None]
        self.std = torch.tensor(std)[:, None, None]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = (self.images[i].float() / 255 - self.mean) / self.std
        dy, dx = torch.randint(0, 9, (2,)).tolist()  # RandomCrop(32, padding=4)
        x = F.pad(x, (4, 4, 4, 4))[:, dy:dy + 32, dx:dx + 32]
        if torch.rand(()) < 0.5:  # RandomHorizontalFlip
            x = x.flip(-1)
        if not self.rotate:
            return x, self.labels[i]
        return torch.stack([torch.rot90(x, k, (1, 2)) for k in range(K)]), torch.arange(K)


def naive_rate(model, frozen, dataset, device, seconds: float, workers: int) -> float:
    """Images/s of an fp32 NCHW eager loop fed by a DataLoader (warm-up step not timed)."""
    model.to(device).train()
    if frozen is not None:
        frozen.to(device).eval()
    optimizer, _ = make_optimizer(model, OptimConfig())
    loader = DataLoader(dataset, BATCH, shuffle=True, drop_last=True, num_workers=workers)

    def batches():
        while True:
            yield from loader

    def step(x, y):
        x, y = x.to(device).flatten(0, -4), y.to(device).flatten()  # B×K×C×H×W → (B·K)×C×H×W
        if frozen is not None:
            with torch.no_grad():
                x = frozen(x)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return len(y)

    it = batches()
    step(*next(it))
    sync(device)
    steps, images, start = 0, 0, time.perf_counter()
    while steps < 2 or time.perf_counter() - start < seconds:
        images += step(*next(it))
        steps += 1
    sync(device)
    return images / (time.perf_counter() - start)


# ---- (b) the project path: the engine's own epoch -----------------------------------------

def project_rate(task: Task, data: DeviceData, runtime: Runtime, seconds: float) -> float:
    """Images/s of `train_one_epoch`: a 2-step warm-up epoch (not timed) sizes a timed epoch
    of about `seconds`. Timed from outside, so per-epoch setup and the last sync count."""
    runtime.prepare_module(task.model)
    if task.frozen is not None:
        runtime.prepare_module(task.frozen).requires_grad_(False)
    optimizer, _ = make_optimizer(task.model, OptimConfig())
    frozen = runtime.maybe_compile(task.frozen) if task.frozen is not None else None
    task = Task(task.name, runtime.maybe_compile(task.model), frozen, task.rotations)
    pool = torch.arange(len(data.train_labels))
    per_image = len(task.rotations) if task.rotations else 1

    def epoch(steps: int, index: int) -> float:
        sync(runtime.device)
        start = time.perf_counter()
        train_one_epoch(task, data, optimizer, runtime, index, OptimConfig(epoch_samples=steps * BATCH),
                        pool, Hooks())
        sync(runtime.device)
        return time.perf_counter() - start

    epoch(2, 0)  # warm-up: compile, cuDNN / oneDNN primitive selection
    step_seconds = epoch(1, 1)  # sizes the timed epoch (the warm-up's first step is atypical)
    steps = max(2, round(seconds / step_seconds))
    return steps * BATCH * per_image / epoch(steps, 2)


def profile_project_step(task: Task, data: DeviceData, runtime: Runtime) -> None:
    """Where a project-path pretraining step spends its time (top ops by self time)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runtime.device.type == "cuda" else [])
    optimizer, _ = make_optimizer(task.model, OptimConfig())
    pool = torch.arange(len(data.train_labels))
    with profile(activities=activities) as prof:
        train_one_epoch(task, data, optimizer, runtime, 9, OptimConfig(epoch_samples=2 * BATCH), pool, Hooks())
        sync(runtime.device)
    key = "self_cuda_time_total" if runtime.device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=20))


# ---- projection of the paper protocol -----------------------------------------------------

def protocol_items(width: float) -> list[tuple[str, int, float, str]]:
    """(item, images processed, FLOPs per image, rate class) for the whole paper protocol.
    Each run is epochs × 50k samples (× K rotated copies for pretraining); the rate class
    says which measured GFLOP/s applies: 'train' (full backprop) or 'probe' (frozen trunk).
    Test-set evaluation (≈ 10k forward passes per epoch, a few % more) is left out."""
    run = 100 * EPOCH_IMAGES
    p = {b: pretrain_flops(b, width) for b in (3, 4, 5)}
    nl = {b: probe_flops(b, width) for b in (1, 2, 3, 4, 5)}
    conv, sup = probe_flops(2, width, "conv"), train_flops(NINClassifier(3, 10, width=width))
    items = [(f"pretrain {b} blocks, 4 rot", run * 4, p[b], "train") for b in (3, 4, 5)]
    items += [(f"pretrain 4 blocks, {name} rot", run * k, p[4], "train")
              for name, k in (("8", 8), ("2 (0/180)", 2), ("2 (90/270)", 2))]
    table1 = [b for blocks in (3, 4, 5) for b in range(1, blocks + 1)]  # 12 probes
    items += [(f"Table 1 non-linear probes ({len(table1)})", run,
               sum(nl[b] for b in table1), "probe"),
              ("Table 2 non-linear probes, block 2 (3)", run, 3 * nl[2], "probe"),
              ("Table 3 conv probe", run, conv, "probe"),
              ("Table 3 random init + conv", run, conv, "probe"),
              ("Table 3 fine-tune non-linear", run, probe_flops(2, width, finetune=True), "train"),
              ("Table 3 fine-tune conv", run, probe_flops(2, width, "conv", True), "train"),
              ("Table 3 supervised NIN (200 ep)", 2 * run, sup, "train"),
              ("semi-sup conv probe (5 sizes)", run, 5 * conv, "probe"),
              ("semi-sup supervised NIN (5 sizes)", run, 5 * sup, "train"),
              ("Figure 5a snapshot probes (5)", run, 5 * nl[2], "probe")]
    return items  # a "(n)" item sums n runs into its FLOPs per image


# The issues' targets for the project path, pretraining at width 1, batch 128 x 4:
# (fraction of the roof of the resolved precision, speed-up over naive), per device type.
TARGETS = {("cpu", True): (0.70, 4.0), ("cpu", False): (0.62, None),
           ("cuda", True): (0.35, 10.0), ("cuda", False): (0.35, 10.0)}


def machine_line(runtime: Runtime) -> str:
    facts = runtime.describe()
    if runtime.device.type == "cuda":
        where = f"{facts['device_name']} (CUDA {facts['cuda']})"
    else:
        where = (f"{facts['device_name']}, flags: {facts['cpu_flags'] or 'none of interest'}, "
                 f"ATen capability {facts['cpu_capability']}, "
                 f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}")
    return (f"machine: {where}\ndevice {runtime.device}, torch {facts['torch']}, {facts['threads']} "
            f"threads, native bf16 {facts['native_bf16']}, precision {runtime.precision} "
            f"(asked {runtime.config.precision})")


def target_lines(device_type: str, compiled: bool, fraction: float, speedup: float) -> list[str]:
    roof_target, speedup_target = TARGETS[(device_type, compiled)]
    lines = [f"target pretrain >= {roof_target:.2f} of the roof: {fraction:.2f} "
             f"{'met' if fraction >= roof_target else 'MISSED'}"]
    if speedup_target:
        lines.append(f"target pretrain >= {speedup_target:.0f}x naive: {speedup:.2f}x "
                     f"{'met' if speedup >= speedup_target else 'MISSED'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="the project path's precision (auto: bf16 only where native)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    parser.add_argument("--width", type=float, default=1.0, help="NIN channel multiplier")
    parser.add_argument("--compile", action="store_true", help="torch.compile the project path")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (naive path)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    parser.add_argument("--profile", action="store_true", help="profile a project-path step")
    args = parser.parse_args()

    runtime = Runtime(RuntimeConfig(device=args.device, precision=args.precision,
                                    channels_last=True, compile=args.compile))
    device = runtime.device
    print(machine_line(runtime))
    print(f"width {args.width}, compile {args.compile}, load avg {os.getloadavg()[0]:.1f}")
    data = load_data("generated", train_size=TRAIN_POOL, test_size=1)
    device_data = DeviceData(data, device)
    naive_args = (data.train_images, data.train_labels, data.mean, data.std)

    dtype = torch.bfloat16 if runtime.precision == "bf16" else torch.float32
    roof = matmul_roof(device, dtype, args.seconds / 2)  # the roof of what the project path runs

    rates = {}
    torch.manual_seed(0)
    rates["pretrain naive"] = naive_rate(NINClassifier(4, K, width=args.width), None,
                                         NaiveDataset(*naive_args, rotate=True), device,
                                         args.seconds, args.workers)
    torch.manual_seed(0)
    task = Task("pretrain", NINClassifier(4, K, width=args.width), rotations=rotation_set("4"))
    rates["pretrain project"] = project_rate(task, device_data, runtime, args.seconds)
    if args.profile:
        profile_project_step(task, device_data, runtime)

    def probe_parts():
        torch.manual_seed(0)
        backbone = NINBackbone(4, width=args.width)
        head = nonlinear_probe(math.prod(block_output_shape(backbone, 2, 3)), 10)
        return head, backbone.truncated(2)
    rates["probe naive"] = naive_rate(*probe_parts(), NaiveDataset(*naive_args, rotate=False),
                                      device, args.seconds, args.workers)
    head, trunk = probe_parts()
    rates["probe project"] = project_rate(Task("probe", head, frozen=trunk), device_data, runtime,
                                          args.seconds)

    flops = {"pretrain": pretrain_flops(4, args.width), "probe": probe_flops(2, args.width)}
    print(f"\nroof: matmul {runtime.precision} {roof:.1f} GFLOP/s (measured now)")
    print(f"FLOPs/image: pretrain (4 blocks, fwd+bwd) {flops['pretrain'] / 1e9:.3f} G, "
          f"probe (block-2 trunk fwd + head fwd+bwd) {flops['probe'] / 1e9:.3f} G\n")
    roof_label = f"of {runtime.precision} roof"
    print(f"{'path':<18}{'images/s':>10}{'GFLOP/s':>10}{roof_label:>14}{'speed-up':>10}")
    figures = {}
    for path, rate in rates.items():
        kind, how = path.split()
        gflops = rate * flops[kind] / 1e9
        speedup = rate / rates[f"{kind} naive"]
        figures[path] = {"images_per_s": rate, "gflops": gflops, "roof_fraction": gflops / roof,
                         "speedup_vs_naive": speedup}
        print(f"{path:<18}{rate:>10.1f}{gflops:>10.1f}{gflops / roof:>14.2f}{speedup:>9.2f}x")
    pretrain_figures = figures["pretrain project"]
    for line in target_lines(device.type, args.compile, pretrain_figures["roof_fraction"],
                             pretrain_figures["speedup_vs_naive"]):
        print(line)

    # Each item's time = its FLOPs / the GFLOP/s measured for its rate class (same
    # efficiency as the measured 4-block pretraining / block-2 probe).
    achieved = {(cls, how): figures[f"{kind} {how}"]["gflops"] * 1e9
                for cls, kind in (("train", "pretrain"), ("probe", "probe")) for how in ("project", "naive")}
    print(f"\nprojected paper protocol (width {args.width}, 100 epochs x 50k unless noted):")
    print(f"{'item':<42}{'project h':>11}{'naive h':>11}")
    projection, totals = [], {"project": 0.0, "naive": 0.0}
    for item, images, per_image, cls in protocol_items(args.width):
        hours = {how: images * per_image / achieved[(cls, how)] / 3600 for how in totals}
        for how in totals:
            totals[how] += hours[how]
        projection.append({"item": item, "images": images, "flops_per_image": per_image,
                           "rate_class": cls, "hours": hours})
        print(f"{item:<42}{hours['project']:>11.1f}{hours['naive']:>11.1f}")
    print(f"{'TOTAL':<42}{totals['project']:>11.1f}{totals['naive']:>11.1f}")
    print(f"(load avg at end {os.getloadavg()[0]:.1f}; other processes on the device skew all figures)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({**runtime.describe(), "width": args.width, "seconds": args.seconds,
                       "roof_gflops": roof, "flops_per_image": flops, "paths": figures,
                       "projection": projection, "total_hours": totals}, f, indent=2)


if __name__ == "__main__":
    main()
