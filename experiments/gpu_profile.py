"""Where a stacked training step of many YearbookNets spends its time, and what the engine's GPU settings buy.

    python experiments/gpu_profile.py [--device cuda|cpu] [--models 256] [--samples 256] [--epochs 5]
                                      [--out results/gpu/profile.jsonl] [--tables results/gpu/profile]

Four measurements, each appended to ``--out`` as one JSON line the moment it is made:

* ``settings``: ``--models`` YearbookNets (equal data, batch 64, SGD with momentum, as the bench's
  ``populations`` case) trained by the batched engine on the ``vmap`` route under each of the engine's
  speed settings: the default (fp32, TF32 off, cuDNN's heuristics), ``cudnn_benchmark=true``,
  ``tf32=true``, both, and ``precision=bf16``. One warm-up call each (cuDNN's benchmark times its
  algorithms there), then the fastest of ``--repeats`` calls: milliseconds per stacked step, TFLOP/s
  and the fraction of the device's fp32 peak. The sequential engine trains ``--sequential-models`` of
  the same jobs under the default and the fastest setting; its milliseconds per model-step times
  ``--models`` give the speed-up a whole population would see.
* ``profile``: ``torch.profiler`` over one call of ``--profile-epochs`` epochs at the default setting:
  the wall time, the time the device spent in kernels (their sum; busy below 100% means the host, not
  the device, sets the pace), kernel launches per step, and the top operators by device time, also
  written as a table into ``--tables``.
* ``conv``: the convolutions of YearbookNet's four blocks at ``--models`` models × batch 64, forward and
  backward, four ways: the grouped convolution that ``vmap`` turns a stacked convolution into (NCHW, as
  the engine runs it), the same in channels-last memory (NHWC), the same product as ``unfold`` + one
  batched matrix product, and one shared-weight convolution over all the samples (the same arithmetic
  with one set of weights: what the device can do at best with this shape); each with TF32 off (the
  engine's default, ``tf32=false``) and on (torch's own default for cuDNN, where no engine set it).

* ``vmap_step``: the bare stacked gradient of ``--models`` YearbookNets (``vmap(grad(loss))``, training
  mode, no optimizer, none of the engine's bookkeeping): milliseconds and kernels per step.

Nothing here is a test: the figures go into the JSON lines, and from there into the GPU check's summary.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctsim.app.bench import _device_name, _jobs, _peak
from ctsim.engine.base import set_tf32
from ctsim.engine.batched import BatchedEngine
from ctsim.engine.sequential import SequentialEngine
from ctsim.measure.cost import flops_per_sample
from ctsim.models import YearbookNet
from ctsim.models.base import ModelSpec

SPEC = ModelSpec(partial(YearbookNet), (1, 32, 32), 2)
PARTS = ("settings", "profile", "conv", "vmap_step")
SETTINGS = {
    "default": {},
    "cudnn_benchmark": {"cudnn_benchmark": True},
    "tf32": {"tf32": True},
    "tf32+cudnn_benchmark": {"tf32": True, "cudnn_benchmark": True},
    "bf16": {"precision": "bf16"},
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(device: torch.device, fn) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class Lines:
    def __init__(self, path: Path, device: torch.device):
        self.path = path
        self.base = {"device": str(device), "device_name": _device_name(device)}
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        row = {**self.base, **row}
        print(json.dumps(row))
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def settings(args, device, x, y, lines: Lines) -> None:
    """Times each setting, then the sequential engine under the default and the fastest one."""
    jobs = _jobs(SPEC, args.models, args.samples, args.epochs, 64, len(x))
    steps = jobs[0].steps()
    flops = flops_per_sample(SPEC).train * sum(len(j.keys) * j.train.epochs for j in jobs)
    peak = _peak(_device_name(device))
    best, best_s = "default", float("inf")
    for name, extra in SETTINGS.items():
        if device.type == "cpu" and name != "default":
            continue  # TF32 and cuDNN are NVIDIA settings; bf16 autocast on a CPU is another question
        train = partial(BatchedEngine(device=args.device, route="vmap", **extra).train, jobs, x, y)
        warm = _seconds(device, train)
        seconds = min(_seconds(device, train) for _ in range(args.repeats))
        if seconds < best_s:
            best, best_s = name, seconds
        lines.write(
            {
                "table": "settings",
                "setting": name,
                "engine": "batched/vmap",
                "models": args.models,
                "steps": steps,
                "seconds": seconds,
                "warmup_s": warm,
                "ms_per_step": 1e3 * seconds / steps,
                "tflops_per_s": flops / seconds / 1e12,
                "peak_fraction": None if peak is None else flops / seconds / peak,
            }
        )
    for name in dict.fromkeys(["default", best]):
        engine = SequentialEngine(device=args.device, **SETTINGS[name])
        some = jobs[: args.sequential_models]
        engine.train(some[:1], x, y)
        seconds = _seconds(device, partial(engine.train, some, x, y))
        per_model_step = seconds / (len(some) * steps)
        lines.write(
            {
                "table": "settings",
                "setting": name,
                "engine": "sequential",
                "models": len(some),
                "steps": steps,
                "seconds": seconds,
                "ms_per_model_step": 1e3 * per_model_step,
                "population_seconds": per_model_step * args.models * steps,
            }
        )


def profile(args, device, x, y, lines: Lines) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    jobs = _jobs(SPEC, args.models, args.samples, args.profile_epochs, 64, len(x))
    steps = jobs[0].steps()
    engine = BatchedEngine(device=args.device, route="vmap")
    engine.train(jobs, x, y)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        wall = _seconds(device, lambda: engine.train(jobs, x, y))
    averages = prof.key_averages()
    on_device = device.type == "cuda"

    def device_us(e) -> float:
        return getattr(e, "self_device_time_total", 0.0) if on_device else e.self_cpu_time_total

    kernels = [e for e in prof.events() if on_device and e.device_type.name == "CUDA"]
    kernel_us = sum(e.time_range.elapsed_us() for e in kernels)
    top = sorted(averages, key=device_us, reverse=True)[: args.top]
    lines.write(
        {
            "table": "profile",
            "models": args.models,
            "steps": steps,
            "wall_s": wall,
            "ms_per_step": 1e3 * wall / steps,
            "kernels": len(kernels),
            "kernels_per_step": len(kernels) / steps,
            "kernel_s": kernel_us / 1e6 if on_device else None,
            "device_busy": kernel_us / 1e6 / wall if on_device else None,
            "top": [
                {
                    "op": e.key,
                    "calls": e.count,
                    "device_ms": device_us(e) / 1e3,
                }
                for e in top
            ],
        }
    )
    args.tables.mkdir(parents=True, exist_ok=True)
    sort = "self_device_time_total" if on_device else "self_cpu_time_total"
    (args.tables / f"profile_{args.models}.txt").write_text(
        averages.table(sort_by=sort, row_limit=args.top, max_name_column_width=90)
    )


def conv(args, device, lines: Lines) -> None:
    """YearbookNet's convolutions, forward and backward, at ``--models`` × 64 samples, four ways, with TF32
    off (the engine's default) and on (torch's own default for cuDNN)."""
    for tf32 in (False, True):
        set_tf32(tf32)
        for row in _conv_rows(args, device):
            lines.write({**row, "tf32": tf32})
    set_tf32(False)


def _conv_rows(args, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    for block, (cin, side) in enumerate([(1, 32), (32, 16), (32, 8), (32, 4)]):
        for way, fn in _conv_ways(args.models, cin, side, g, device).items():
            fn()
            seconds = min(_seconds(device, fn) for _ in range(args.repeats + 2))
            flops = 3 * 2 * args.models * 64 * side * side * 32 * cin * 9  # forward + two backward products
            yield {
                "table": "conv",
                "block": block,
                "way": way,
                "models": args.models,
                "shape": [64, cin, side, side],
                "ms": 1e3 * seconds,
                "tflops_per_s": flops / seconds / 1e12,
            }


def _conv_ways(m: int, cin: int, side: int, g: torch.Generator, device) -> dict:
    """One convolution block (32 channels out, 3×3) of ``m`` models × 64 samples, forward + backward, four
    ways."""
    b, c = 64, 32
    x = torch.randn(b, m * cin, side, side, generator=g).to(device).requires_grad_()
    w = (0.1 * torch.randn(m * c, cin, 3, 3, generator=g)).to(device).requires_grad_()
    xs = x.detach().view(b, m, cin, side, side).transpose(0, 1).reshape(m * b, cin, side, side)
    xs.requires_grad_()
    ws = w.detach()[:c].clone().requires_grad_()
    wm = w.detach().view(m, c, cin * 9).clone().requires_grad_()
    xu = x.detach().view(b, m, cin, side, side).transpose(0, 1).contiguous().requires_grad_()
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    wl = w.detach().contiguous(memory_format=torch.channels_last).requires_grad_()

    def grouped():
        F.conv2d(x, w, padding=1, groups=m).sum().backward()

    def grouped_nhwc():
        F.conv2d(xl, wl, padding=1, groups=m).sum().backward()

    def unfold_matmul():  # per model and sample: (c × cin·9) @ (cin·9 × side²), one batched product
        cols = F.unfold(xu.view(m * b, cin, side, side), 3, padding=1).view(m, b, cin * 9, side * side)
        torch.matmul(wm.unsqueeze(1), cols).sum().backward()

    def shared_weights():
        F.conv2d(xs, ws, padding=1).sum().backward()

    return {
        "grouped": grouped,
        "grouped_nhwc": grouped_nhwc,
        "unfold_matmul": unfold_matmul,
        "shared_weights": shared_weights,
    }


def vmap_step(args, device, x, y, lines: Lines) -> None:
    """The bare stacked gradient, ``vmap(grad(loss))`` over ``--models`` YearbookNets in training mode, with
    no optimizer and none of the engine's bookkeeping: how much of the engine's step is the model's own
    forward and backward under ``vmap``, and how many kernels that takes."""
    from torch.func import functional_call, grad, stack_module_state, vmap
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    nets = [SPEC.build(seed=m).to(device) for m in range(args.models)]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    xb = (
        x[: 64 * args.models].view(args.models, 64, *x.shape[1:])
        if len(x) >= 64 * args.models
        else (x[:64].expand(args.models, 64, *x.shape[1:]).contiguous())
    )
    yb = y[:64].expand(args.models, 64).contiguous()

    def loss(p, b, xs, ys):
        return F.cross_entropy(functional_call(base, {**p, **b}, (xs,)), ys)

    step = vmap(grad(loss))
    for tf32 in (False, True):  # torch's own default lets cuDNN use TF32; the engine's (tf32=false) does not
        set_tf32(tf32)
        for _ in range(2):
            step(params, buffers, xb, yb)
        times = [_seconds(device, lambda: step(params, buffers, xb, yb)) for _ in range(args.repeats + 3)]
        kernels = None
        if device.type == "cuda":
            with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
                step(params, buffers, xb, yb)
                torch.cuda.synchronize(device)
            kernels = sum(1 for e in prof.events() if e.device_type.name == "CUDA")
            args.tables.mkdir(parents=True, exist_ok=True)
            (args.tables / f"vmap_step_{args.models}{'_tf32' if tf32 else ''}.txt").write_text(
                prof.key_averages().table(
                    sort_by="self_device_time_total", row_limit=args.top, max_name_column_width=90
                )
            )
        row = {"table": "vmap_step", "tf32": tf32, "models": args.models, "ms_per_step": 1e3 * min(times)}
        lines.write({**row, "kernels_per_step": kernels})
    set_tf32(False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--models", type=int, default=256)
    parser.add_argument("--samples", type=int, default=256, help="training samples per model")
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the timed calls (4 steps each)")
    parser.add_argument("--profile-epochs", type=int, default=1)
    parser.add_argument("--sequential-models", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--top", type=int, default=25, help="operators listed in the profile")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--out", type=Path, default=Path("results/gpu/profile.jsonl"))
    parser.add_argument("--tables", type=Path, default=Path("results/gpu/profile"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use --device cpu)")
    device = torch.device(args.device)
    lines = Lines(args.out, device)
    g = torch.Generator().manual_seed(0)
    n = max(4 * args.samples, 1024)
    x = torch.rand(n, *SPEC.input_shape, generator=g).to(device)
    y = torch.randint(SPEC.num_classes, (n,), generator=g).to(device)
    if "settings" in args.parts:
        settings(args, device, x, y, lines)
    if "profile" in args.parts:
        profile(args, device, x, y, lines)
    if "conv" in args.parts:
        conv(args, device, lines)
    if "vmap_step" in args.parts:
        vmap_step(args, device, x, y, lines)


if __name__ == "__main__":
    main()
