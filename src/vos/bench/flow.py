"""Optical flow per frame pair: TinyFlowNet vs RAFT-small (RMNet Table 7), and TinyFlowNet's
end-point error on generated val pairs when trained weights are given.

Both networks run with random weights for timing (their cost does not depend on the weights);
RAFT-small runs ``--raft-updates`` refinement iterations (torchvision's default is 12).
"""

from __future__ import annotations

import statistics
import tempfile

import torch

from vos.bench.common import Record
from vos.profiling import time_calls


def _time(fn, repeats: int, device: torch.device) -> tuple[float, float]:
    with torch.inference_mode():
        return time_calls(fn, repeats, device)


def run(args) -> list[Record]:
    import torchvision

    from vos.model.flow import RaftSmallFlow, TinyFlowNet, endpoint_error, tiny_flow_net

    torch.manual_seed(0)
    device = torch.device(args.device)
    frame = torch.rand(1, 3, args.height, args.width, device=device)
    previous = torch.rand(1, 3, args.height, args.width, device=device)
    setting = {
        "input": f"{args.height}x{args.width}",
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    records = []
    tiny = TinyFlowNet().to(device).eval()
    ms, peak = _time(lambda: tiny(frame, previous), args.repeats, device)
    records.append(Record("flow/tinyflownet", dict(setting), ms, peak))
    with (
        tempfile.TemporaryDirectory() as folder
    ):  # random weights, loaded the way users load theirs
        path = f"{folder}/raft_small.pth"
        torch.save(torchvision.models.optical_flow.raft_small(weights=None).state_dict(), path)
        raft = RaftSmallFlow(weights=path, num_flow_updates=args.raft_updates).to(device).eval()
    ms, peak = _time(lambda: raft(frame, previous), args.repeats, device)
    records.append(Record("flow/raft_small", {**setting, "updates": args.raft_updates}, ms, peak))
    records.append(
        Record(
            "speedup/tinyflownet_vs_raft_small",
            dict(setting),
            records[0].ms,
            records[0].peak_mb,
            extra={"speedup": records[1].ms / records[0].ms},
        )
    )
    if args.tinyflownet_weights:
        from vos.data.flow_pairs import FlowPairDataset
        from vos.data.synthetic import SyntheticSource, dataset_config_defaults

        defaults = dataset_config_defaults()
        source = SyntheticSource(
            "val",
            args.eval_videos,
            36,
            seed=0,
            height=defaults["height"],
            width=defaults["width"],
            scene=defaults["scene"],
        )
        pairs = FlowPairDataset(source, length=args.eval_pairs, seed=1, flip_prob=0.0)
        trained = tiny_flow_net(args.tinyflownet_weights).to(device)
        items = [pairs[i] for i in range(len(pairs))]  # indexing past len() never ends
        errors = []
        with torch.inference_mode():
            for item in items:
                predicted = trained(
                    item["frame"][None].to(device), item["previous"][None].to(device)
                )
                errors.append(float(endpoint_error(predicted, item["flow"][None].to(device))))
        zero = [float(item["flow"].norm(dim=0).mean()) for item in items]
        records.append(
            Record(
                "flow/tinyflownet_epe",
                {
                    "pairs": len(errors),
                    "videos": args.eval_videos,
                    "input": f"{defaults['height']}x{defaults['width']}",
                },
                0.0,
                0.0,
                extra={
                    "epe_px": statistics.mean(errors),
                    "zero_flow_epe_px": statistics.mean(zero),
                },
            )
        )
    return records


def add_arguments(parser) -> None:
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--raft-updates", type=int, default=12)
    parser.add_argument(
        "--tinyflownet-weights", default=None, help="a vos.train_flow checkpoint: adds its EPE"
    )
    parser.add_argument("--eval-videos", type=int, default=8)
    parser.add_argument("--eval-pairs", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
