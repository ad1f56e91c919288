#!/usr/bin/env python3
"""One frame, the suite's converted network against the released one, both reading a memory
built from the official probabilities (teacher forcing): where their readouts differ, and why.

    python experiments/parity/frame.py --mode hmmn --official OFFICIAL/HMMN --weights W.pth \
        --davis DATA --official-out OUT/hmmn --video syn_val_0000 --frame 7

``W.pth`` and ``OUT/<mode>`` are those of ``official.py save-random`` / ``official.py run``
(docs/parity.md). The released network is rerun on the first ``--frame`` + 1 frames (its
probabilities must equal the stored ones) with hooks on its memory readers at ``--frame``;
the suite's engine runs with ``compare.py --feed-official``'s teacher forcing and keeps its
reader's readouts (and keys) at that frame. Per object it prints:

- ``hmmn``: per scale (``Memory``, ``Memory_topk3``, ``Memory_topk2``) the largest readout
  difference and where; for res3 and res2, at the res4 cell of that difference, the relative
  gap between the last candidate kept and the first one left out (res3 keeps k = 32, res2 the
  first k/4 = 8 of the sorted list) in the suite's ranking, and the smallest over the frame;
- ``rmnet``: the largest difference of the memory and query keys inside the released code's
  regions (where its box maps keep them), of the res4 logits q·k/√Ck, and of the two halves
  of the readout (the memory read and the query value), with the largest logit.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from compare import feed_official  # noqa: E402
from official import _official  # noqa: E402

from vos.data.sources.davis import DavisSource  # noqa: E402
from vos.inference.loading import load_engine  # noqa: E402
from vos.model.official.convert import convert_file  # noqa: E402

# the released modules whose outputs (and inputs) are kept, per mode
OFFICIAL_READERS = {
    "hmmn": {"res4": "Memory", "res3": "Memory_topk3", "res2": "Memory_topk2"},
    "rmnet": {"res4": "memory"},
}
HMMN_FACTORS = {"res4": 1, "res3": 2, "res2": 4}


def official_readers(args) -> tuple[dict[str, tuple], np.ndarray]:
    """(inputs, output) of each released reader at ``args.frame``, and the probabilities."""
    official = _official(args.mode, args.official)
    nets = official.build()
    official.load(nets, args.weights)
    net = nets["rmnet" if args.mode == "rmnet" else "model"].module
    calls, kept = {"segment": 0}, {}

    def keep(scale):
        def hook(module, inputs, output):
            if calls["segment"] == args.frame:
                kept[scale] = ([x.clone() for x in inputs], output[0].clone())

        return hook

    for scale, name in OFFICIAL_READERS[args.mode].items():
        getattr(net, name).register_forward_hook(keep(scale))
    segment = net.segment

    def counted(*a, **k):  # both test loops segment frame t at the t-th call
        calls["segment"] += 1
        return segment(*a, **k)

    net.segment = counted
    for batch in official.loader(args.davis, [args.video]):
        _, probs, _, _ = official.infer(nets, batch, args.frame + 1)
    return kept, probs.numpy()


def suite_reader(args, stored: np.ndarray) -> dict:
    """The suite's readouts, keys and (HMMN) candidate scores at ``args.frame``."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{args.mode}.ckpt"
        convert_file(args.mode, args.weights, ckpt)
        engine = load_engine(ckpt, torch.device("cpu"))
    feed_official(engine, stored, [])
    reader = engine.network.reader
    kept: dict = {"top_k": getattr(reader, "inference_top_k", None)}
    read = reader.read
    if args.mode == "hmmn":
        kernel_centres = reader.kernel_centres

        def centres(query_key, memory, state):
            kept["kernel"] = kernel_centres(query_key, memory, state)
            return kept["kernel"]

        reader.kernel_centres = centres

    def reading(query, memory, state):
        out = read(query, memory, state)
        if query.index == args.frame:
            kept["features"] = {k: v.clone() for k, v in out.features.items()}
            kept["memory_key"] = memory.keys("res4").clone()
            kept["query_key"] = query.keys["res4"].clone()
            if args.mode == "hmmn":
                kept["scores"] = reader.fine_candidate_scores(
                    query.keys["res4"], memory, kept.get("kernel")
                )
        return out

    reader.read = reading
    source = DavisSource(args.davis, split=args.split)
    engine.run_video(source, args.video, max_frames=args.frame + 1)
    return kept


def relative_gaps(scores: torch.Tensor, rank: int) -> torch.Tensor:
    """(s_rank − s_rank+1) / |s_rank| per query cell ``[hw]``, ranks counted from 1."""
    top = scores.topk(rank + 1, dim=0).values
    return (top[rank - 1] - top[rank]) / top[rank - 1].abs()


def report_hmmn(ours: dict, theirs: dict) -> None:
    k, scores = ours["top_k"], ours["scores"]
    width4 = ours["features"]["res4"].shape[-1]
    for scale, factor in HMMN_FACTORS.items():
        mine, official = ours["features"][scale][:, 0], theirs[scale][1]  # [objects, C, h, w]
        for obj in range(mine.shape[0]):
            difference = (mine[obj] - official[obj]).abs().amax(0)
            y, x = divmod(int(difference.argmax()), difference.shape[1])
            line = (
                f"{scale} object {obj + 1}: max |Δ| {difference.max():.2e} at ({y}, {x}), "
                f"readout scale {official[obj].abs().max():.2f}"
            )
            if scale != "res4" and k is not None:
                rank = k if scale == "res3" else max(k // 4, 1)
                gaps = relative_gaps(scores[obj], rank)
                cell = (y // factor) * width4 + x // factor
                line += (
                    f"; res4 cell ({y // factor}, {x // factor}): gap between candidates "
                    f"{rank} and {rank + 1} {gaps[cell]:.1e} (frame's smallest {gaps.min():.1e})"
                )
            print(line)


def report_rmnet(ours: dict, theirs: dict) -> None:
    # the released reader's inputs: memory key and value (zero outside the memory boxes),
    # query key and value (zero outside the query box), [objects, C, (T,) h, w]
    (memory_key, _, query_key, _), readout = theirs["res4"]
    mine = ours["features"]["res4"][:, 0]  # [objects, 2·Cv, h, w]
    value_channels = readout.shape[1] // 2
    for obj in range(readout.shape[0]):
        in_memory = memory_key[obj] != 0
        in_query = query_key[obj] != 0
        suite_memory = ours["memory_key"][obj] * in_memory
        suite_query = ours["query_key"][obj] * in_query
        channels = memory_key.shape[1]
        theirs_logits = memory_key[obj].reshape(channels, -1).t() @ query_key[obj].reshape(
            channels, -1
        )
        ours_logits = suite_memory.reshape(channels, -1).t() @ suite_query.reshape(channels, -1)
        scale = 1 / math.sqrt(channels)
        difference = (mine[obj] - readout[obj]).abs()
        print(
            f"object {obj + 1}: memory key max |Δ| {(suite_memory - memory_key[obj]).abs().max():.1e}"
            f" (scale {memory_key[obj].abs().max():.1f}), query key "
            f"{(suite_query - query_key[obj]).abs().max():.1e} "
            f"(scale {query_key[obj].abs().max():.1f}); logits "
            f"{(ours_logits - theirs_logits).abs().max() * scale:.1e} "
            f"(largest {theirs_logits.max() * scale:.1f}); readout: memory read "
            f"{difference[:value_channels].max():.1e}, query value "
            f"{difference[value_channels:].max():.1e} (scale {readout[obj].abs().max():.1f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=sorted(OFFICIAL_READERS), required=True)
    parser.add_argument("--official", type=Path, required=True, help="the official snapshot")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--davis", type=Path, required=True, help="DAVIS-layout root")
    parser.add_argument("--split", default="val")
    parser.add_argument("--official-out", type=Path, required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--frame", type=int, required=True)
    args = parser.parse_args()
    if args.frame < 1:
        raise SystemExit("--frame must be 1 or later (frame 0 is given)")
    torch.set_grad_enabled(False)
    stored = np.load(args.official_out / f"{args.video}.npz")["probs"]
    theirs, rerun = official_readers(args)
    rerun_error = float(np.abs(rerun - stored[: args.frame + 1]).max())
    print(f"released network rerun vs stored probabilities: {rerun_error:.1e}")
    if rerun_error > 0:
        raise SystemExit("the rerun differs from --official-out: other weights or frames?")
    ours = suite_reader(args, stored)
    (report_hmmn if args.mode == "hmmn" else report_rmnet)(ours, theirs)


if __name__ == "__main__":
    main()
