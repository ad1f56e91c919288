"""Compare the suite's converted network with the official inference code, frame by frame.

    python experiments/parity/compare.py --mode stm --weights W.pth --davis ROOT \
        --official-out OUT_OFFICIAL --videos v1 v2 [--json parity.json]

``W.pth`` is a checkpoint in the authors' released layout (``official.py save-random`` writes
one from the official network with random weights), ``OUT_OFFICIAL`` holds what ``official.py
run`` wrote for it (per video ``<video>.npz`` with ``probs`` and ``labels``). This converts
``W.pth`` with `vos.model.official.convert` (as ``python -m vos.convert`` does), runs the
suite's inference engine with the stored protocol on the same frames (fp32, CPU), and prints
per video the largest difference of the label probabilities, the share of pixels whose
written label differs, and the seconds per frame of both. docs/parity.md records the figures.

``--feed-official`` memorises the official probabilities of each frame instead of the suite's
own (teacher forcing): each frame then reads the same memory masks in both codes, so the
printed per-frame differences are that frame's own and not the feedback of earlier frames'
differences through the memory. It prints the largest difference of the object
probabilities per frame (measured before the official ones replace them).

``--parts`` adds, per video, the seconds the suite's engine spent in each part of the network
(query encoder and its heads, memory encoder, memory read, decoder, and the rest: soft
aggregation, labels, frame loading), timed around those calls.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vos.data.sources.davis import DavisSource
from vos.inference.loading import load_engine
from vos.model.official.convert import MODES, convert_file
from vos.model.padding import unpad


def feed_official(
    engine, official_probs: np.ndarray, frame_diffs: list[float], own: dict | None = None
):
    """Make ``engine`` memorise ``official_probs[t]`` at each frame ``t`` > 0 (in place, so
    the reader's state sees them too), after noting how far its own were from them (and
    keeping its own object probabilities ``[1, O, H, W]`` in ``own[t]`` when given). Returns
    the call that undoes it."""
    current = {"t": 0}
    encode_frame, memorise = engine.network.encode_frame, engine._memorise

    def encode(image, t, *args, **kwargs):
        current["t"] = t
        return encode_frame(image, t, *args, **kwargs)

    def forced(memory, frame, object_probs, what):
        t = current["t"]
        if t > 0:
            h, w = official_probs.shape[-2:]
            inside = unpad(object_probs, h, w)
            theirs = torch.from_numpy(official_probs[t, 1:]).to(inside)[None]
            frame_diffs.append(float((inside - theirs).abs().max()))
            if own is not None:
                own[t] = inside.clone()
            inside.copy_(theirs)
        return memorise(memory, frame, object_probs, what)

    engine.network.encode_frame = encode
    engine._memorise = forced

    def restore() -> None:
        engine.network.encode_frame, engine._memorise = encode_frame, memorise

    return restore


def time_parts(engine) -> dict[str, float]:
    """Wrap the network's parts so that their wall time adds up in the returned dict."""
    seconds: dict[str, float] = {}

    def timed(name: str, call):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    network = engine.network
    encoders = network.encoders
    encoders.encode_query = timed("query encoder", encoders.encode_query)
    encoders.encode_memory = timed("memory encoder", encoders.encode_memory)
    network.reader.read = timed("read", network.reader.read)
    network.decoder.forward = timed("decoder", network.decoder.forward)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--davis", required=True, help="DAVIS-layout root (JPEGImages/480p, ...)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--official-out", required=True)
    parser.add_argument("--videos", nargs="+", required=True)
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--parts", action="store_true", help="time the engine's parts too")
    parser.add_argument(
        "--feed-official",
        action="store_true",
        help="memorise the official probabilities (teacher forcing); print per-frame figures",
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{args.mode}.ckpt"
        convert_file(args.mode, args.weights, ckpt)
        engine = load_engine(ckpt, torch.device("cpu"))
    parts = time_parts(engine) if args.parts else None
    source = DavisSource(args.davis, split=args.split)
    official_meta = Path(args.official_out) / "official.json"
    official_meta = json.loads(official_meta.read_text()) if official_meta.exists() else {}
    official_seconds = {
        v["video"]: v.get("seconds_per_frame") for v in official_meta.get("videos", [])
    }
    rows = []
    for video in args.videos:
        if parts is not None:
            parts.clear()
        official = np.load(Path(args.official_out) / f"{video}.npz")
        probs: dict[int, np.ndarray] = {}
        start = time.perf_counter()

        def keep(t: int, p: torch.Tensor, probs: dict = probs) -> None:
            probs[t] = p.float().cpu().numpy()

        # as many frames as the official run covered (official.py run --max-frames)
        frames = len(official["probs"])
        frame_diffs: list[float] = []
        restore = (
            feed_official(engine, official["probs"], frame_diffs) if args.feed_official else None
        )
        result = engine.run_video(source, video, on_probs=keep, max_frames=frames)
        if restore is not None:
            restore()
        seconds = (time.perf_counter() - start) / len(result.labels)
        ours = np.stack([probs[t] for t in sorted(probs) if t > 0])
        theirs = official["probs"][1 : len(ours) + 1].astype(np.float32)
        if ours.shape != theirs.shape:
            raise SystemExit(f"{video}: suite probs {ours.shape} vs official {theirs.shape}")
        labels_theirs = official["labels"][1 : len(ours) + 1]
        labels_ours = result.labels[1 : len(ours) + 1]
        spread = float(((theirs > 0.01) & (theirs < 0.99)).mean())
        # where the written labels differ: how close the official top two probabilities were
        top_two = np.sort(theirs, axis=1)[:, -2:]
        margins = (top_two[:, 1] - top_two[:, 0])[labels_ours != labels_theirs]
        row = {
            "video": video,
            "frames": int(len(ours) + 1),
            "objects": int(ours.shape[1] - 1),
            "size": list(ours.shape[-2:]),
            "max_abs_prob_diff": float(np.abs(ours - theirs).max()),
            "mean_abs_prob_diff": float(np.abs(ours - theirs).mean()),
            "label_pixels_differing": float((labels_ours != labels_theirs).mean()),
            "label_pixels_differing_count": int(margins.size),
            "largest_official_margin_where_labels_differ": float(margins.max(initial=0.0)),
            "official_uncertain_share": spread,
            "suite_seconds_per_frame": seconds,
            "official_seconds_per_frame": official_seconds.get(video),
        }
        if args.feed_official:
            row["teacher_forced_frame_max_abs_diff"] = [float(f"{d:.2g}") for d in frame_diffs]
        if parts is not None:
            total = seconds * len(result.labels)
            row["suite_seconds_by_part"] = {
                **{name: round(s, 3) for name, s in parts.items()},
                "rest": round(total - sum(parts.values()), 3),
            }
        rows.append(row)
        print(json.dumps(row))
    summary = {
        "mode": args.mode,
        "max_abs_prob_diff": max(r["max_abs_prob_diff"] for r in rows),
        "label_pixels_differing": max(r["label_pixels_differing"] for r in rows),
        "videos": rows,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "videos"}))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
