"""What a trained reader's branches contribute (``python -m vos.probe``).

``lcm``: runs a trained LCM checkpoint over the first N videos of the generated val split and
prints, averaged over every read, the root-mean-square size of the query value v^Q, GRM's
readout, PGM's and ORM's terms as they enter the merge (``pgm``: y_PGM / max P, ``orm``:
y_ORM; see `vos.model.readers.lcm`) and the merged half of the readout, the position map P's
mean and maximum (Eq. 6, before the merge rescales it), and ``pgm_share``: PGM's term against
the merged half, i.e. how much of it the decoder sees from PGM.
``relation_to_query_median|p90|max``: ORM's relation term v^Q_F (Eq. 8) against the v^Q it is
added to, per object and read: how far the relation has outgrown v^Q.
"""

from __future__ import annotations

import statistics

import torch

from vos.config import compose_config, instantiate
from vos.inference.loading import load_engine
from vos.model.readers.lcm import LCMReader


def probe_lcm(ckpt: str, videos: int, dataset_overrides: list[str]) -> dict[str, float]:
    engine = load_engine(ckpt, torch.device("cpu"))
    reader = engine.network.reader
    if not isinstance(reader, LCMReader):
        raise ValueError(f"{ckpt} holds a {type(reader).__name__}, not LCM's reader")
    cfg = compose_config("eval", ["ckpt_path=-", "output_dir=-", *dataset_overrides])
    source = instantiate(cfg.dataset.eval)
    reader.scale_log = []
    try:
        for video in source.videos()[:videos]:
            engine.run_video(source, video)
        log = reader.scale_log
    finally:
        reader.scale_log = None
    summary: dict[str, float] = {"reads": len(log)}
    for key in ("query_value", "grm", "pgm", "orm", "merged", "map_mean", "map_max", "pgm_share"):
        values = [entry[key] for entry in log if key in entry]
        if values:
            summary[key] = statistics.fmean(values)
    ratios = sorted(r for entry in log for r in entry["relation_to_query"])
    if ratios:  # heavy-tailed (it grows with the object's set): quantiles, not a mean
        summary["relation_to_query_median"] = ratios[len(ratios) // 2]
        summary["relation_to_query_p90"] = ratios[int(0.9 * (len(ratios) - 1))]
        summary["relation_to_query_max"] = ratios[-1]
    return summary
