#!/usr/bin/env python3
"""One frame, the suite's converted network against the released one, both reading a memory
built from the official probabilities (teacher forcing): where their readouts differ, and why.

    python experiments/parity/frame.py --mode hmmn --official OFFICIAL/HMMN --weights W.pth \
        --davis DATA --official-out OUT/hmmn --video syn_val_0000 --frame 7

Modes: ``hmmn``, ``rmnet``, ``stcn``.

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
  of the readout (the memory read and the query value), with the largest logit;
- ``stcn``: the largest difference of the memory and query keys, of the logits
  (2 q·k − ‖k‖²)/√Ck and of the memory read, and at the query cell of that read's largest
  difference the relative gap between the 20th and 21st largest logits (STCN's top-20; the
  released code's logits), with the smallest such gap over the frame; then the decoder
  outputs' largest difference, and the decoder outputs and probabilities of both codes at the
  pixel where the frame's probabilities differ most.
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
from vos.model.padding import padding_for  # noqa: E402

# the released modules whose outputs (and inputs) are kept, per mode
OFFICIAL_READERS = {
    "hmmn": {"res4": "Memory", "res3": "Memory_topk3", "res2": "Memory_topk2"},
    "rmnet": {"res4": "memory"},
    "stcn": {},  # its memory bank is no module: `_hook_stcn_bank`
}
HMMN_FACTORS = {"res4": 1, "res3": 2, "res2": 4}


def official_readers(args) -> tuple[dict[str, tuple], np.ndarray]:
    """(inputs, output) of each released reader at ``args.frame``, and the probabilities."""
    official = _official(args.mode, args.official)
    nets = official.build()
    official.load(nets, args.weights)
    net = nets["rmnet" if args.mode == "rmnet" else "model"]
    net = getattr(net, "module", net)  # DataParallel but in STCN's evaluation
    calls, kept = {"segment": 0}, {}

    def keep(scale):
        def hook(module, inputs, output):
            if calls["segment"] == args.frame:
                kept[scale] = ([x.clone() for x in inputs], output[0].clone())

        return hook

    for scale, name in OFFICIAL_READERS[args.mode].items():
        getattr(net, name).register_forward_hook(keep(scale))
    if args.mode == "stcn":
        _hook_stcn_bank(calls, kept, args.frame)

        def decoder_output(module, inputs, output):
            if calls["segment"] == args.frame:
                kept["decoder"] = output.clone()  # [O, 1, H, W], before the sigmoid

        net.decoder.register_forward_hook(decoder_output)
    name = "segment_with_query" if args.mode == "stcn" else "segment"
    segment = getattr(net, name)

    def counted(*a, **k):  # the test loops segment frame t at the t-th call
        calls["segment"] += 1
        return segment(*a, **k)

    setattr(net, name, counted)
    for batch in official.loader(args.davis, [args.video]):
        _, probs, _, _ = official.infer(nets, batch, args.frame + 1)
    return kept, probs.numpy()


def _hook_stcn_bank(calls: dict, kept: dict, frame: int) -> None:
    """Keep the memory keys, query key and readout of STCN's ``MemoryBank.match_memory``."""
    import inference_memory_bank  # noqa: PLC0415 (the official snapshot, on sys.path)

    bank = inference_memory_bank.MemoryBank
    match_memory = bank.match_memory

    def matching(self, qk):
        readout = match_memory(self, qk)
        if calls["segment"] == frame:
            memory = self.mem_k if self.temp_k is None else torch.cat([self.mem_k, self.temp_k], 2)
            kept["res4"] = ([memory.clone(), qk.clone()], readout.clone())
        return readout

    bank.match_memory = matching


def suite_reader(args, stored: np.ndarray) -> dict:
    """The suite's readouts, keys and (HMMN) candidate scores at ``args.frame``."""
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{args.mode}.ckpt"
        convert_file(args.mode, args.weights, ckpt)
        engine = load_engine(ckpt, torch.device("cpu"))
    kept: dict = {"top_k": getattr(engine.network.reader, "inference_top_k", None), "own": {}}
    feed_official(engine, stored, [], own=kept["own"])
    reader = engine.network.reader
    if args.mode == "stcn":
        decoder = engine.network.decoder.forward

        def decoding(*a, **k):
            out = decoder(*a, **k)
            kept["decoder"] = out.clone()  # the last call's: this frame's, the run ends here
            return out

        engine.network.decoder.forward = decoding
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


def report_stcn(ours: dict, theirs: dict) -> None:
    (memory_key, query_key), readout = theirs["res4"]  # [1, Ck, N], [1, Ck, h, w]; [O, Cv, h, w]
    channels = memory_key.shape[1]
    mine_memory = ours["memory_key"][:1].flatten(2)  # one key per frame, shared by the objects
    mine_query = ours["query_key"][:1].flatten(2)
    query = query_key.flatten(2)

    def logits(memory, query):  # STCN's (2 a·b − ‖a‖²)/√Ck, [N, hw]
        return (2 * memory[0].t() @ query[0] - memory[0].pow(2).sum(0)[:, None]) / channels**0.5

    theirs_logits = logits(memory_key, query)
    top = theirs_logits.topk(21, dim=0).values
    gaps = (top[19] - top[20]) / top[19].abs()
    print(
        f"memory key max |Δ| {(mine_memory - memory_key).abs().max():.1e} (scale "
        f"{memory_key.abs().max():.1f}), query key {(mine_query - query).abs().max():.1e}; "
        f"logits {(logits(mine_memory, mine_query) - theirs_logits).abs().max():.1e} "
        f"(largest {theirs_logits.max():.1f})"
    )
    # STCN's network reads the objects side by side: [1, O, 2·Cv, h, w]; the read half
    mine = ours["features"]["res4"][0, :, : readout.shape[1]]
    width = readout.shape[-1]
    for obj in range(readout.shape[0]):
        difference = (mine[obj] - readout[obj]).abs().amax(0)
        y, x = divmod(int(difference.argmax()), width)
        print(
            f"object {obj + 1}: memory read max |Δ| {difference.max():.1e} at ({y}, {x}) (scale "
            f"{readout[obj].abs().max():.1f}); gap between logits 20 and 21 there "
            f"{gaps[y * width + x]:.1e} (frame's smallest {gaps.min():.1e})"
        )


def report_stcn_aggregation(ours: dict, theirs: dict, stored: np.ndarray, frame: int) -> None:
    """Where the frame's probabilities differ most: the decoder outputs there (STCN's objects
    are aggregated from sigmoid(logit) through p / (1 − p), which loses digits as p → 1)."""
    decoder_theirs = theirs["decoder"][:, 0]  # [O, H, W] padded
    decoder_ours = ours["decoder"].reshape(decoder_theirs.shape)
    mine = ours["own"][frame][0].numpy()  # [O, h, w] inside the frame
    official = stored[frame, 1:]
    difference = np.abs(mine - official)
    obj, y, x = np.unravel_index(int(difference.argmax()), difference.shape)
    left, _, top, _ = padding_for(*official.shape[-2:])  # the suite's padding is STCN's
    at = (slice(None), y + top, x + left)
    print(
        f"decoder outputs max |Δ| {(decoder_ours - decoder_theirs).abs().max():.1e}; "
        f"probabilities max |Δ| {difference.max():.1e} (object {obj + 1}, ({y}, {x})): "
        f"decoder outputs there {decoder_theirs[at].tolist()} (suite {decoder_ours[at].tolist()}), "
        f"official probabilities {official[:, y, x].tolist()}, suite {mine[:, y, x].tolist()}"
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
    {"hmmn": report_hmmn, "rmnet": report_rmnet, "stcn": report_stcn}[args.mode](ours, theirs)
    if args.mode == "stcn":
        report_stcn_aggregation(ours, theirs, stored, args.frame)


if __name__ == "__main__":
    main()
