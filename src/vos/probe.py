"""``python -m vos.probe lcm --ckpt PATH [--videos N] [--json]``: what a trained reader's
branches contribute.

``lcm``: runs a trained LCM checkpoint over the first N videos of the generated val split and
prints, averaged over every read, the root-mean-square size of the query value v^Q, GRM's
readout and the merged half of the readout (y_PGM + y_ORM), the position map's mean and
maximum, and ``pgm_share``: y_PGM = map · v^Q against the merged half, i.e. how much of it the
decoder sees from PGM. ``relation_to_query_median|p90|max``: ORM's relation term v^Q_F (Eq. 8)
against the v^Q it is added to, per object and read: how far the relation has outgrown v^Q.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch


def probe_lcm(ckpt: str, videos: int, dataset_overrides: list[str]) -> dict[str, float]:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from vos.config import CONFIG_DIR
    from vos.eval import load_engine
    from vos.model.readers.lcm import LCMReader

    engine = load_engine(ckpt, torch.device("cpu"))
    reader = engine.network.reader
    if not isinstance(reader, LCMReader):
        raise SystemExit(f"vos.probe lcm: {ckpt} holds a {type(reader).__name__}, not LCM's reader")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=["ckpt_path=-", "output_dir=-", *dataset_overrides])
    source = instantiate(cfg.dataset.eval)
    reader.scale_log = []
    try:
        for video in source.videos()[:videos]:
            engine.run_video(source, video)
        log = reader.scale_log
    finally:
        reader.scale_log = None
    summary: dict[str, float] = {"reads": len(log)}
    for key in ("query_value", "grm", "merged", "map_mean", "map_max", "pgm_share"):
        values = [entry[key] for entry in log if key in entry]
        if values:
            summary[key] = statistics.fmean(values)
    ratios = sorted(r for entry in log for r in entry["relation_to_query"])
    if ratios:  # heavy-tailed (it grows with the object's set): quantiles, not a mean
        summary["relation_to_query_median"] = ratios[len(ratios) // 2]
        summary["relation_to_query_p90"] = ratios[int(0.9 * (len(ratios) - 1))]
        summary["relation_to_query_max"] = ratios[-1]
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vos.probe", description=__doc__)
    sub = parser.add_subparsers(dest="reader", required=True)
    lcm = sub.add_parser("lcm", help="LCM: the sizes of GRM, PGM and ORM's terms")
    lcm.add_argument(
        "--ckpt", required=True, help="a checkpoint of `python -m vos.train model=lcm`"
    )
    lcm.add_argument("--videos", type=int, default=4, help="first N videos of the val split")
    lcm.add_argument("--json", action="store_true", help="print one JSON object")
    lcm.add_argument(
        "overrides",
        nargs="*",
        help="eval-config dataset overrides, e.g. dataset.eval.num_videos=96",
    )
    args = parser.parse_args(argv)
    try:
        summary = probe_lcm(args.ckpt, args.videos, args.overrides)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"vos.probe lcm: error: {error}") from error
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return
    for key, value in summary.items():
        print(f"{key:>18}  {value:.4g}")


if __name__ == "__main__":
    main()
