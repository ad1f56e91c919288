"""Training-step time of `python -m vos.train`'s module, per model, precision and weight layout.

One step is what the trainer runs: the training step's forward over a batch of clips, the
backward, gradient clipping by norm (``trainer.gradient_clip_val``) and a step of the config's
optimiser (``optim``, AdamW by default; the learning-rate schedule is left out). Batches come from the loader `vos.train` builds (its dataset and
``data.*``, e.g. the generated data's 96×160 crops) and are drawn before timing, so loading is
not timed (`vos.bench data` times it). ``--precision`` takes Lightning's names: ``32`` or a
mixed mode (``bf16-mixed``, ``16-mixed``), whose forward runs under the autocast Lightning's
precision plugin uses (no gradient scaling: ``16-mixed`` on a GPU scales the loss too);
``--layout channels_last`` converts the module's 4-D weights as ``channels_last=true`` does.
``--overrides`` are train-config overrides (``model/size=paper``, ``data.batch_size=8``).

Per case: ``ms`` per step (mean over ``--steps`` after ``--warmup``), ``first_step_ms``,
``steps_per_min``, the resident-set growth over the warm-up steps (the first step allocates
the optimiser's state and the autograd buffers; the timed steps run without the sampler's
thread, which would take time from the step's own threads on a machine of few cores), and
what the figures depend on: torch's threads,
its CPU vector ISA (``cpu_isa``; ``ATEN_CPU_CAPABILITY`` lowers it) and whether the CPU has AMX
tiles (``amx``), which oneDNN uses for bf16 convolutions and matrix products
(``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` keeps oneDNN off them, to time a CPU without AMX).
"""

from __future__ import annotations

import os
import time
import warnings

import torch

from vos.bench.common import Record
from vos.profiling import RssSampler

LAYOUTS = ("contiguous", "channels_last")


def cpu_capabilities() -> dict[str, object]:
    """The CPU features the timings depend on (torch's private probes where they exist)."""
    from vos.inference.precision import cpu_has_amx_tiles

    return {
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "amx": cpu_has_amx_tiles(),
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL"),
        "threads": torch.get_num_threads(),
    }


def _batches(cfg, count: int, with_flow: bool) -> list[dict]:
    import hydra

    from vos.lightning.datamodule import VOSDataModule

    module = VOSDataModule(
        hydra.utils.instantiate(cfg.dataset.train),
        None,
        batch_size=cfg.data.batch_size,
        num_workers=0,
        total_steps=count,
        clip=cfg.data.clip,
        seed=cfg.seed,
        with_flow=with_flow,
    )
    loader = iter(module.train_dataloader())
    return [next(loader) for _ in range(count)]


def _module(cfg):
    from vos.lightning.module import VOSModule

    torch.manual_seed(cfg.seed)
    return VOSModule(cfg.model, cfg.optim, cfg.lr_schedule, cfg.loss, cfg.inference).train()


def _time_case(cfg, batches: list[dict], precision: str, layout: str, warmup: int) -> Record:
    from vos.inference.precision import AUTOCAST_DTYPES, check_autocast_supported

    device = torch.device("cpu")
    check_autocast_supported(precision, device, key="--precision")
    dtype = AUTOCAST_DTYPES[precision]
    module = _module(cfg)
    if layout == "channels_last":
        module = module.to(memory_format=torch.channels_last)
    optimizer = module.configure_optimizers()["optimizer"]
    clip_norm = cfg.trainer.get("gradient_clip_val")

    def step(batch: dict) -> float:
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = module.training_step(batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
        optimizer.step()
        return time.perf_counter() - started

    with warnings.catch_warnings():
        # the module logs its losses; without a trainer Lightning warns at every call
        warnings.simplefilter("ignore")
        with RssSampler() as sampler:
            times = [step(batch) for batch in batches[:warmup]]
        times += [step(batch) for batch in batches[warmup:]]
    timed = times[warmup:]
    ms = 1000 * sum(timed) / len(timed)
    clip = cfg.data.clip
    crop = "whole" if clip.crop is None else f"{clip.crop[0]}x{clip.crop[1]}"
    setting = {
        "precision": precision,
        "layout": layout,
        "batch": cfg.data.batch_size,
        "crop": crop,
        "frames": clip.num_frames,
    }
    return Record(
        f"train_step/{cfg.model.name}",
        setting,
        ms,
        sampler.peak_growth_mb,
        extra={
            "first_step_ms": 1000 * times[0],
            "steps_per_min": 60000 / ms,
            "steps": len(timed),
            **cpu_capabilities(),
        },
    )


def run(args) -> list[Record]:
    from vos.config import compose_config
    from vos.inference.precision import parse_precision

    if args.warmup < 1 or args.steps < 1:
        raise ValueError(
            f"--warmup {args.warmup} --steps {args.steps}: both must be >= 1 (the memory is "
            "measured over the warm-up steps, the time over the others)"
        )

    precisions = [parse_precision(p, key="--precision") for p in args.precision]
    records = []
    for model in args.model:
        cfg = compose_config("train", [f"model={model}", *args.overrides])
        network = _module(cfg).network
        # flow in the clips as vos.train gives it: from the data, for a reader on oracle flow
        with_flow = network.reader.needs.needs_flow and network.flow_is_oracle
        batches = _batches(cfg, args.warmup + args.steps, with_flow)
        for precision in precisions:
            for layout in args.layout:
                records.append(_time_case(cfg, batches, precision, layout, args.warmup))
    return records


def add_arguments(parser) -> None:
    parser.add_argument("--model", nargs="+", default=["stm"], help="conf/model names")
    parser.add_argument(
        "--precision", nargs="+", default=["32", "bf16-mixed"], help="32 | bf16-mixed | 16-mixed"
    )
    parser.add_argument("--layout", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--steps", type=int, default=8, help="steps timed per case")
    parser.add_argument(
        "--warmup", type=int, default=2, help="steps run before timing (>= 1; memory measured)"
    )
    parser.add_argument(
        "--overrides",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="train-config overrides, e.g. model/size=paper data.batch_size=8",
    )
