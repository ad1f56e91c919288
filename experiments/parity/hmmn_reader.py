#!/usr/bin/env python3
"""The suite's HMMN reader against the released HMMN reader alone (``Memory`` and
``Memory_topk`` of ``model.py``, imported from ``--official``), on the same keys and values.

Both readers get random keys (a pattern that drifts one res4 cell every two frames, so the
tracking moves) and values for ``--frames`` frames, with the memory the official
``Run_video`` keeps: res4 every 5th frame plus the previous one, res3/res2 the first and the
previous frame. Per frame it prints the largest absolute difference of the res4, res3 and res2
readouts. The suite's reader runs with the converted checkpoint's settings (σ and tracking
rules ``official``, window 7, top-k 32); ``--track-rule paper`` shows what the paper's
centring changes.

    python experiments/parity/hmmn_reader.py --official OFFICIAL/HMMN [--frames 30]
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import torch

from vos.model.memory import MemoryBank
from vos.model.readers.base import FrameFeatures
from vos.model.readers.hmmn import HMMNReader

H4, W4 = 6, 8
CHANNELS = {"res4": (16, 8, 1), "res3": (16, 8, 2), "res2": (8, 4, 4)}  # Ck, Cv, factor


def import_official(root: Path) -> types.ModuleType:
    """``model.py`` of the official snapshot (it imports cv2 and matplotlib at the top)."""
    for name in ("cv2", "matplotlib", "matplotlib.pyplot"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.path.insert(0, str(root))
    import model  # noqa: PLC0415

    return model


def random_frames(count: int, objects: int, seed: int) -> list[tuple[dict, dict]]:
    """Keys per object (STM's memory encoder sees the object's mask): the objects are the
    batch, as in both the released code and the suite's network."""
    generator = torch.Generator().manual_seed(seed)
    base = {
        scale: torch.randn(objects, ck, H4 * f, W4 * f, generator=generator)
        for scale, (ck, _, f) in CHANNELS.items()
    }
    frames = []
    for t in range(count):
        keys = {
            scale: 2.0 * (b + 0.5 * torch.randn(b.shape, generator=generator)).roll(t // 2, -1)
            for scale, b in base.items()
        }
        values = {
            scale: torch.randn(objects, 1, cv, H4 * f, W4 * f, generator=generator)
            for scale, (_, cv, f) in CHANNELS.items()
        }
        frames.append((keys, values))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="a snapshot of Hongje/HMMN")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--track-rule", choices=("official", "paper"), default="official")
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    official = import_official(Path(args.official))
    memory_res4 = official.Memory(gaussian_kernel=3, gaussian_kernel_flow_window=7)
    topk_res3, topk_res2 = official.Memory_topk(32), official.Memory_topk(8)
    reader = HMMNReader(
        key_channels=CHANNELS["res4"][0],
        value_channels=CHANNELS["res4"][1],
        fine_key_channels={s: CHANNELS[s][0] for s in ("res3", "res2")},
        fine_value_channels={s: CHANNELS[s][1] for s in ("res3", "res2")},
        sigma_rule="official",
        track_rule=args.track_rule,
        window=7,
        top_k=32,
    ).eval()
    frames = random_frames(args.frames, args.objects, args.seed)

    def stacked(t: int) -> dict[str, torch.Tensor]:  # the official [O, C, T=1, h, w] layout
        keys, values = frames[t]
        out = {f"k{s}": k.unsqueeze(2) for s, k in keys.items()}
        out.update({f"v{s}": v[:, 0].unsqueeze(2) for s, v in values.items()})
        return out

    coarse, fine = None, None  # the official Run_video's res4 and res3/res2 memories
    bank, state = MemoryBank(), reader.new_state()
    bank.add(0, *frames[0], permanent=True)
    worst = 0.0
    for t in range(1, args.frames):
        previous = stacked(t - 1)
        this4 = {
            n: previous[n] if coarse is None else torch.cat([coarse[n], previous[n]], 2)
            for n in ("kres4", "vres4")
        }
        this32 = {
            n: previous[n] if fine is None else torch.cat([fine[n], previous[n]], 2)
            for n in ("kres3", "vres3", "kres2", "vres2")
        }
        query_keys = frames[t][0]
        no_query_value = torch.zeros(args.objects, CHANNELS["res4"][1], H4, W4)
        read4, affinity = memory_res4(
            this4["kres4"], this4["vres4"], query_keys["res4"], no_query_value
        )
        cells = affinity.shape[2]
        guide = (
            affinity
            if affinity.shape[1] == cells
            else torch.cat((affinity[:, :cells], affinity[:, -cells:]), 1)
        )  # first and previous frame
        read3, index, score = topk_res3(this32["kres3"], this32["vres3"], query_keys["res3"], guide)
        read2, _, _ = topk_res2(
            this32["kres2"], this32["vres2"], query_keys["res2"], guide, index, score
        )
        if (t - 1) % 5 == 0:
            coarse = this4
        if t - 1 == 0:
            fine = this32
        # the suite's engine: every 5th frame memorised, the previous one read as temporary
        if t - 1 != 0 and (t - 1) % 5 == 0:
            bank.add(t - 1, *frames[t - 1])
        elif t - 1 != 0:
            bank.set_temporary(t - 1, *frames[t - 1])
        query = FrameFeatures(t, None, {}, query_keys, no_query_value)
        ours = reader.read(query, bank, state).features
        diffs = [
            (ours["res4"][:, 0, : read4.shape[1] // 2] - read4[:, : read4.shape[1] // 2]),
            ours["res3"][:, 0] - read3,
            ours["res2"][:, 0] - read2,
        ]
        diffs = [float(d.abs().max()) for d in diffs]
        worst = max(worst, *diffs)
        print(
            f"frame {t:3d}  memory {this4['kres4'].shape[2]}  max |diff| res4 {diffs[0]:.1e}"
            f"  res3 {diffs[1]:.1e}  res2 {diffs[2]:.1e}"
        )
    print(f"largest difference over {args.frames - 1} frames: {worst:.1e}")


if __name__ == "__main__":
    main()
