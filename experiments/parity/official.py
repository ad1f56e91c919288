#!/usr/bin/env python3
"""Run the OFFICIAL STM / STCN / HMMN / RMNet code on the CPU, in fp32, for parity checks.

The networks, data sets and inference code are imported at run time from a snapshot of the
official repository (``--official DIR``); none of it is copied here. This script only

1. makes that code build and run without a GPU and without downloads (``.cuda()`` is a no-op,
   ``torch.cuda.is_available()`` is False, ``pretrained=True`` backbones are built with random
   weights, missing helper packages are stubbed, and RMNet's CUDA box-map extension is replaced
   by a pure-PyTorch stand-in written from the facts of its kernel source),
2. writes random weights in the exact layout of the released checkpoint (``save-random``),
3. drives the official evaluation protocol and stores what it produces (``run``), and
4. writes the parameter table of the released checkpoint (``tables``).

Subcommands::

    save-random --mode M --official DIR --frames DAVIS_ROOT --out W.pth [--seed 0]
    run --mode M --official DIR --weights W.pth --davis DAVIS_ROOT --videos V [V ...] --out OUT
    tables --mode M --official DIR --out TABLE.json

``run`` writes OUT/<video>.npz with ``probs`` float32 [T, K+1, H, W] (background first; frame 0
is the official code's value for the given mask) and ``labels`` uint8 [T, H, W] (the mask the
official script would write), and OUT/official.json (command, commit, timings, notes).

Needs only torch, torchvision, numpy, Pillow and opencv (the official code imports cv2).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import random
import shlex
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

MODES = ("stm", "stcn", "hmmn", "rmnet")
REPOSITORY = {
    "stm": "seoungwugoh/STM",
    "stcn": "hkchengrex/STCN",
    "hmmn": "Hongje/HMMN",
    "rmnet": "hzxie/RMNet",
}
# Logit spread the random decoder heads are scaled to (std of the foreground-minus-background
# logit before aggregation) and the flow spread (pixels) of the random TinyFlowNet.
LOGIT_STD = 3.0
FLOW_STD = 1.5
# Root-mean-square of the random key projections' outputs. Untempered random keys overflow
# STCN's softmax_w_top (exp of the raw affinity, no max subtraction) and make STM-style
# attention one-hot.
KEY_RMS = 1.0
HARNESS_NOTES: list[str] = []


# --------------------------------------------------------------------------------------------
# Environment: no GPU, no downloads, stubs for missing helper packages
# --------------------------------------------------------------------------------------------


def _quiet(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
    """Stand-in for tqdm / progressbar: yields the iterable unchanged, prints nothing."""
    return iterable


def _unavailable(name: str) -> Any:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{name} is a harness stub (package not installed)")

    return fail


class _EasyDict(dict):
    """Minimal easydict.EasyDict (attribute access) for RMNet's config.py."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as error:
            raise AttributeError(key) from error

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _stub_missing_packages() -> None:
    """Stub helper packages the official files import but the paths used here never call."""
    if not _installed("tqdm"):
        _stub("tqdm", tqdm=_quiet)
        HARNESS_NOTES.append("stubbed missing package tqdm (progress bars only)")
    if not _installed("progressbar"):
        _stub("progressbar", progressbar=_quiet)
        HARNESS_NOTES.append("stubbed missing package progressbar (progress bars only)")
    if not _installed("matplotlib"):
        _stub("matplotlib", use=lambda *a, **k: None)
        _stub("matplotlib.pyplot")
        HARNESS_NOTES.append("stubbed missing package matplotlib (imported, never used)")
    if not _installed("scipy"):
        _stub("scipy")
        _stub("scipy.ndimage")
        _stub(
            "scipy.ndimage.morphology",
            binary_dilation=_unavailable("scipy.ndimage.morphology.binary_dilation"),
            binary_erosion=_unavailable("scipy.ndimage.morphology.binary_erosion"),
        )
        HARNESS_NOTES.append("stubbed missing package scipy (only used for visualisation)")
    if not _installed("skimage"):
        _stub("skimage")
        _stub("skimage.morphology", disk=_unavailable("skimage.morphology.disk"))
        HARNESS_NOTES.append("stubbed missing package skimage (only used for metrics)")
    if not _installed("easydict"):
        _stub("easydict", EasyDict=_EasyDict)
        HARNESS_NOTES.append("stubbed missing package easydict (minimal attribute dict)")


def _cpu_device(device: Any) -> Any:
    if device is None:
        return None
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "cuda" else device
    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")):
        return torch.device("cpu")
    return device


def _cpu_factory(factory: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> Any:
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        return factory(*args, **kwargs)

    make.__wrapped__ = factory
    return make


def _force_cpu() -> None:
    """CPU only: no CUDA visible, .cuda() is a no-op, device='cuda' factories make CPU tensors."""
    torch.cuda.is_available = lambda: False
    torch.cuda.device_count = lambda: 0
    torch.cuda.synchronize = lambda *a, **k: None
    nn.Module.cuda = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    for name in ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn"):
        setattr(torch, name, _cpu_factory(getattr(torch, name)))


def _no_download() -> None:
    """pretrained=True builds random weights; model_zoo.load_url returns an empty state dict."""
    import torch.utils.model_zoo
    import torchvision.models

    def random_backbone(builder: Any) -> Any:
        def build(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            kwargs.pop("weights", None)
            return builder(weights=None, **kwargs)

        return build

    for name in ("resnet18", "resnet50"):
        setattr(torchvision.models, name, random_backbone(getattr(torchvision.models, name)))
    torch.utils.model_zoo.load_url = lambda *a, **k: {}
    torch.hub.load_state_dict_from_url = lambda *a, **k: {}


def _reg_att_map_forward(
    mask: torch.Tensor, prob_threshold: float, n_pts_threshold: int, n_bbox_loose_pixels: int
) -> list[torch.Tensor]:
    """Pure-PyTorch stand-in for RMNet's extensions/reg_att_map_generator (CUDA only).

    Written from reg_att_map_generator.cu: mask is a contiguous float32 [B, K, H, W] tensor.
    For every batch item and object channel i >= 1 (channel 0, the background, keeps a zero
    map and a zero box): count the pixels with mask >= prob_threshold; if there are fewer than
    n_pts_threshold the box is the whole frame, otherwise it is the tight box of those pixels
    grown by n_bbox_loose_pixels on each side (x_min <= loose -> 0, x_max + loose >= W -> W-1,
    same for y). The map is 1 inside the box, bounds included, and 0 elsewhere. Returns
    [reg_att_map float32 [B, K, H, W], bboxes int32 [B, K, 4] as (x_min, x_max, y_min, y_max)].
    """
    if mask.dtype != torch.float32:
        raise TypeError(f"reg_att_map_generator expects float32 masks, got {mask.dtype}")
    batch, channels, height, width = mask.shape
    att_map = torch.zeros(batch, channels, height, width, dtype=torch.float32)
    bboxes = torch.zeros(batch, channels, 4, dtype=torch.int32)
    loose = int(n_bbox_loose_pixels)
    for b in range(batch):
        for i in range(1, channels):
            ys, xs = torch.nonzero(mask[b, i] >= prob_threshold, as_tuple=True)
            if ys.numel() < n_pts_threshold:
                x0, x1, y0, y1 = 0, width - 1, 0, height - 1
            else:
                x0, x1 = int(xs.min()), int(xs.max())
                y0, y1 = int(ys.min()), int(ys.max())
                x0 = 0 if x0 <= loose else x0 - loose
                x1 = width - 1 if x1 + loose >= width else x1 + loose
                y0 = 0 if y0 <= loose else y0 - loose
                y1 = height - 1 if y1 + loose >= height else y1 + loose
            bboxes[b, i] = torch.tensor([x0, x1, y0, y1], dtype=torch.int32)
            att_map[b, i, y0 : y1 + 1, x0 : x1 + 1] = 1
    return [att_map, bboxes]


def _prepare(official: Path) -> None:
    if not official.is_dir():
        raise SystemExit(f"--official {official} is not a directory")
    _stub_missing_packages()
    _force_cpu()
    _no_download()
    sys.path.insert(0, str(official))
    torch.set_grad_enabled(False)


def _commit(official: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(official), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load_function(script: Path, name: str, namespace: dict[str, Any]) -> Any:
    """Execute only the definition of function ``name`` from an official script."""
    tree = ast.parse(script.read_text(), filename=str(script))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            module = ast.Module(body=[node], type_ignores=[])
            exec(compile(module, str(script), "exec"), namespace)
            return namespace[name]
    raise SystemExit(f"{script} defines no function {name}")


def _video_names(davis: Path) -> list[str]:
    return sorted(p.name for p in (davis / "JPEGImages" / "480p").iterdir() if p.is_dir())


def _n_frames(davis: Path, video: str) -> int:
    return len(list((davis / "JPEGImages" / "480p" / video).glob("*.jpg")))


# --------------------------------------------------------------------------------------------
# The four official code bases
# --------------------------------------------------------------------------------------------


class Official:
    """How one official code base is built, saved, loaded and run (as its eval script does)."""

    mode = ""
    built_by = ""
    protocol = ""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = Path(tempfile.mkdtemp(prefix=f"official_{self.mode}_"))

    def build(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def release(self, nets: dict[str, nn.Module]) -> Any:
        raise NotImplementedError

    def load(self, nets: dict[str, nn.Module], path: Path) -> None:
        raise NotImplementedError

    def loader(self, davis: Path, videos: list[str]) -> DataLoader:
        raise NotImplementedError

    def infer(
        self, nets: dict[str, nn.Module], batch: Any, max_frames: int | None
    ) -> tuple[str, torch.Tensor, torch.Tensor, list[int]]:
        """Return (video, probs [T, K+1, H, W], labels [T, H, W], object id of each channel)."""
        raise NotImplementedError

    def heads(self, nets: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
        """Layers whose output scale save-random tempers: (kind, layer); kind is 'key' (memory
        and query key projections), 'two_class' / 'sigmoid' (decoder heads) or 'flow'."""
        raise NotImplementedError

    def _imset(self, videos: list[str]) -> Path:
        path = self.tmp / "imset.txt"
        path.write_text("".join(f"{v}\n" for v in videos))
        return path


class StmLike(Official):
    """STM and HMMN: model.py + dataset.py + Run_video of eval_DAVIS.py."""

    class_name = "STM"

    def build(self) -> dict[str, nn.Module]:
        import model as official_model

        net = nn.DataParallel(getattr(official_model, self.class_name)())
        net.eval()
        return {"model": net}

    def release(self, nets: dict[str, nn.Module]) -> Any:
        return nets["model"].state_dict()

    def load(self, nets: dict[str, nn.Module], path: Path) -> None:
        nets["model"].load_state_dict(torch.load(path, map_location="cpu"))
        nets["model"].eval()

    def loader(self, davis: Path, videos: list[str]) -> DataLoader:
        from dataset import DAVIS_MO_Test

        testset = DAVIS_MO_Test(
            str(davis), resolution="480p", imset=str(self._imset(videos)), single_object=False
        )
        return DataLoader(testset, batch_size=1, shuffle=False, num_workers=0)

    def _run_video(self, net: nn.Module) -> Any:
        quiet_tqdm = types.SimpleNamespace(tqdm=_quiet)
        namespace = {"model": net, "np": np, "torch": torch, "F": F, "tqdm": quiet_tqdm}
        return _load_function(self.root / "eval_DAVIS.py", "Run_video", namespace)

    def infer(
        self, nets: dict[str, nn.Module], batch: Any, max_frames: int | None
    ) -> tuple[str, torch.Tensor, torch.Tensor, list[int]]:
        fs, ms, num_objects, info = batch
        name = info["name"][0]
        num_frames = info["num_frames"][0].item()
        if max_frames:
            num_frames = min(num_frames, max_frames)
            fs, ms = fs[:, :, :num_frames], ms[:, :, :num_frames]
        run_video = self._run_video(nets["model"])
        pred, es = run_video(fs, ms, num_frames, num_objects, Mem_every=5, Mem_number=None)
        k = int(num_objects[0][0])
        probs = es[0, : k + 1].permute(1, 0, 2, 3)
        return name, probs, torch.from_numpy(pred), list(range(k + 1))

    def heads(self, nets: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
        net = nets["model"].module
        keys = [net.KV_M_r4.Key, net.KV_Q_r4.Key]
        if self.mode == "hmmn":
            keys += [net.KV_M_r3.Key, net.KV_Q_r3.Key, net.KV_M_r2.Key, net.KV_Q_r2.Key]
        return [("key", layer) for layer in keys] + [("two_class", net.Decoder.pred2)]


class Stm(StmLike):
    mode = "stm"
    class_name = "STM"
    built_by = "model.py STM() in nn.DataParallel, as eval_DAVIS.py"
    protocol = (
        "eval_DAVIS.py Run_video(Fs, Ms, num_frames, num_objects, Mem_every=5): memory = frames "
        "0,5,10,... (each added once segmented) + the previous frame; Ms one-hot with K=11 "
        "channels from dataset.DAVIS_MO_Test; Es = softmax of the aggregated logits"
    )


class Hmmn(StmLike):
    mode = "hmmn"
    class_name = "HMMN"
    built_by = "model.py HMMN() in nn.DataParallel, as eval_DAVIS.py"
    protocol = (
        "eval_DAVIS.py Run_video(Fs, Ms, num_frames, num_objects, Mem_every=5): r4 memory = "
        "frames 0,5,10,... + the previous frame; r3/r2 memory = frame 0 + the previous frame; "
        "Ms one-hot with K=num_objects+1 channels from dataset.DAVIS_MO_Test"
    )


class Stcn(Official):
    mode = "stcn"
    built_by = "model/eval_network.py STCN(), as eval_davis.py"
    protocol = (
        "eval_davis.py: InferenceCore(prop_model, rgb, k, top_k=20, mem_every=5, "
        "include_last=False); interact(msk[:,0], 0, T); prob unpadded and bilinearly resized "
        "to size_480p, argmax over the k+1 channels"
    )

    def build(self) -> dict[str, nn.Module]:
        from model.eval_network import STCN

        return {"model": STCN().cuda().eval()}

    def release(self, nets: dict[str, nn.Module]) -> Any:
        return nets["model"].state_dict()

    def load(self, nets: dict[str, nn.Module], path: Path) -> None:
        prop_saved = torch.load(path, map_location="cpu")
        # eval_davis.py: "Performs input mapping such that stage 0 model can be loaded".
        for k in list(prop_saved.keys()):
            if k == "value_encoder.conv1.weight" and prop_saved[k].shape[1] == 4:
                pads = torch.zeros((64, 1, 7, 7), device=prop_saved[k].device)
                prop_saved[k] = torch.cat([prop_saved[k], pads], 1)
        nets["model"].load_state_dict(prop_saved)
        nets["model"].eval()

    def loader(self, davis: Path, videos: list[str]) -> DataLoader:
        from dataset.davis_test_dataset import DAVISTestDataset

        testset = DAVISTestDataset(str(davis), imset=str(self._imset(videos)))
        return DataLoader(testset, batch_size=1, shuffle=False, num_workers=0)

    def infer(
        self, nets: dict[str, nn.Module], batch: Any, max_frames: int | None
    ) -> tuple[str, torch.Tensor, torch.Tensor, list[int]]:
        from inference_core import InferenceCore
        from util.tensor_util import unpad

        rgb = batch["rgb"].cuda()
        msk = batch["gt"][0].cuda()
        info = batch["info"]
        name = info["name"][0]
        k = len(info["labels"][0])
        size = info["size_480p"]
        if max_frames:
            rgb, msk = rgb[:, :max_frames], msk[:, :max_frames]
        processor = InferenceCore(nets["model"], rgb, k, top_k=20, mem_every=5, include_last=False)
        processor.interact(msk[:, 0], 0, rgb.shape[1])
        probs, labels = [], []
        for ti in range(processor.t):
            prob = unpad(processor.prob[:, ti], processor.pad)
            prob = F.interpolate(prob, size, mode="bilinear", align_corners=False)
            probs.append(prob[:, 0])
            labels.append(torch.argmax(prob, dim=0)[0].to(torch.uint8))
        ids = [0] + [int(label) for label in info["labels"][0]]
        return name, torch.stack(probs), torch.stack(labels), ids

    def heads(self, nets: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
        return [("key", nets["model"].key_proj.key_proj), ("sigmoid", nets["model"].decoder.pred)]


class Rmnet(Official):
    mode = "rmnet"
    built_by = (
        "models/tiny_flownet.py TinyFlowNet(cfg) and models/rmnet.py RMNet(cfg), each in "
        "nn.DataParallel, as core/test.py"
    )
    protocol = (
        "core/test.py with epoch_idx=-1: utils.helpers.multi_scale_inference(cfg, tflownet, "
        "rmnet, frames, masks, n_objects) with config.py TEST.FRAME_SCALES=[1.0], FLIP_LR=False, "
        "MEMORIZE_EVERY=5; data from utils.data_loaders DAVIS VAL transforms; est_masks = "
        "argmax over the TEST.N_MAX_OBJECTS+1 channels"
    )

    def __init__(self, root: Path, annotations: str = "all") -> None:
        super().__init__(root)
        self.annotations = annotations
        self._install_standins()

    def _install_standins(self) -> None:
        sys.modules.pop("reg_att_map_generator", None)
        _stub("reg_att_map_generator", forward=_reg_att_map_forward)
        HARNESS_NOTES.append(
            "RMNet: extensions/reg_att_map_generator (CUDA) replaced by the pure-PyTorch "
            "stand-in _reg_att_map_forward of this harness, written from the kernel source"
        )
        if not _installed("flow_affine_transformation"):
            _stub(
                "flow_affine_transformation",
                forward=_unavailable("flow_affine_transformation.forward"),
            )
            HARNESS_NOTES.append(
                "RMNet: extension flow_affine_transformation stubbed (training augmentation only)"
            )

    def cfg(self) -> Any:
        import config

        return getattr(config, "__C")  # a plain config.__C would be name-mangled here

    def build(self) -> dict[str, nn.Module]:
        from models.rmnet import RMNet
        from models.tiny_flownet import TinyFlowNet

        cfg = self.cfg()
        tflownet = nn.DataParallel(TinyFlowNet(cfg))
        rmnet = nn.DataParallel(RMNet(cfg))
        tflownet.eval()
        rmnet.eval()
        return {"tflownet": tflownet, "rmnet": rmnet}

    def release(self, nets: dict[str, nn.Module]) -> Any:
        # core/train.py saves this dict; core/test.py reads 'tflownet' and 'rmnet'.
        return {
            "epoch_index": 0,
            "best_metrics": {"J-Mean": 0.0, "F-Mean": 0.0, "JF-Mean": 0.0},
            "tflownet": nets["tflownet"].state_dict(),
            "rmnet": nets["rmnet"].state_dict(),
        }

    def load(self, nets: dict[str, nn.Module], path: Path) -> None:
        checkpoint = torch.load(path, map_location="cpu")
        nets["tflownet"].load_state_dict(checkpoint["tflownet"])
        nets["rmnet"].load_state_dict(checkpoint["rmnet"])
        nets["tflownet"].eval()
        nets["rmnet"].eval()

    def loader(self, davis: Path, videos: list[str]) -> DataLoader:
        import utils.data_loaders

        cfg = self.cfg()
        index = self.tmp / "DAVIS.json"
        entries = [{"name": v, "n_frames": _n_frames(davis, v)} for v in videos]
        index.write_text(json.dumps({"train": [], "val": entries, "test": entries}))
        annotations = davis / "Annotations" / "480p"
        if self.annotations == "first":
            # As if only frame 0 were annotated (missing files load as empty masks).
            annotations = self.tmp / "Annotations"
            for v in videos:
                (annotations / v).mkdir(parents=True, exist_ok=True)
                link = annotations / v / "00000.png"
                if not link.exists():
                    link.symlink_to(davis / "Annotations" / "480p" / v / "00000.png")
        cfg.DATASETS.DAVIS.INDEXING_FILE_PATH = str(index)
        cfg.DATASETS.DAVIS.IMG_FILE_PATH = str(davis / "JPEGImages" / "480p") + "/%s/%05d.jpg"
        cfg.DATASETS.DAVIS.ANNOTATION_FILE_PATH = str(annotations) + "/%s/%05d.png"
        cfg.DATASETS.DAVIS.OPTICAL_FLOW_FILE_PATH = str(self.tmp / "no_flow") + "/%s/%05d.flo"
        testset = utils.data_loaders.DatasetCollector.get_dataset(
            cfg, "DAVIS", utils.data_loaders.DatasetSubset.VAL
        )
        return DataLoader(testset, batch_size=1, shuffle=False, num_workers=0)

    def infer(
        self, nets: dict[str, nn.Module], batch: Any, max_frames: int | None
    ) -> tuple[str, torch.Tensor, torch.Tensor, list[int]]:
        import utils.helpers

        cfg = self.cfg()
        video_name, n_objects, frames, masks, _optical_flows = batch
        if max_frames:
            n_objects = n_objects[:, :max_frames]
            frames, masks = frames[:, :max_frames], masks[:, :max_frames]
        _est_flows, est_probs = utils.helpers.multi_scale_inference(
            cfg, nets["tflownet"], nets["rmnet"], frames, masks, n_objects
        )
        k = int(torch.max(n_objects[0]).item())
        probs = est_probs[0, :, : k + 1]
        labels = torch.argmax(est_probs[0], dim=1).to(torch.uint8)
        name = video_name[0].split("/", 1)[-1]
        return name, probs, labels, list(range(k + 1))

    def heads(self, nets: dict[str, nn.Module]) -> list[tuple[str, nn.Module]]:
        return [
            ("key", nets["rmnet"].module.kv_memory.key_conv),
            ("key", nets["rmnet"].module.kv_query.key_conv),
            ("two_class", nets["rmnet"].module.decoder.pred2),
            ("flow", nets["tflownet"].module.predict_flow2),
        ]


def _official(mode: str, root: Path, **kwargs: Any) -> Official:
    _prepare(root)
    if mode == "stm":
        return Stm(root)
    if mode == "hmmn":
        return Hmmn(root)
    if mode == "stcn":
        return Stcn(root)
    return Rmnet(root, **kwargs)


# --------------------------------------------------------------------------------------------
# save-random
# --------------------------------------------------------------------------------------------


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the official code draws from the legacy RNG
    torch.manual_seed(seed)


def _perturb(nets: dict[str, nn.Module]) -> None:
    """Random but not trivial: BN affine away from (1, 0) and all-zero biases made nonzero."""
    for net in nets.values():
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                module.weight.uniform_(0.7, 1.3)
                module.bias.normal_(0.0, 0.1)
            elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                bias = module.bias
                if bias is not None and not bias.any():
                    bias.normal_(0.0, 0.01)


def _tensors(released: Any, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    if isinstance(released, torch.Tensor):
        return [(prefix, released)]
    if isinstance(released, dict):
        return [item for key, value in released.items() for item in _tensors(value, prefix + key)]
    return []


def _batchnorms(nets: dict[str, nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for net in nets.values()
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


def _calibrate(
    official: Official, nets: dict[str, nn.Module], batches: list[Any], frames: int
) -> None:
    """Cumulative-average BN statistics from the official protocol run in train mode."""
    norms = _batchnorms(nets)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    for net in nets.values():
        net.train()
    for batch in batches:
        official.infer(nets, batch, frames)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for net in nets.values():
        net.eval()


def _temper(
    official: Official,
    nets: dict[str, nn.Module],
    batches: list[Any],
    frames: int,
    kinds: set[str],
) -> list[str]:
    """Scale random layers so that keys, logits and flows have a realistic spread."""
    heads = [(kind, layer) for kind, layer in official.heads(nets) if kind in kinds]
    seen: list[list[torch.Tensor]] = [[] for _ in heads]

    def recorder(kind: str, store: list[torch.Tensor]) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if kind == "two_class":
                store.append((output[:, 1] - output[:, 0]).flatten())
            else:
                store.append(output.flatten())

        return hook

    handles = [
        layer.register_forward_hook(recorder(kind, store))
        for (kind, layer), store in zip(heads, seen)
    ]
    for batch in batches:
        official.infer(nets, batch, frames)
    for handle in handles:
        handle.remove()
    report = []
    for (kind, layer), store in zip(heads, seen):
        values = torch.cat(store)
        mean, std = float(values.mean()), float(values.std())
        if not np.isfinite(mean) or not np.isfinite(std):
            raise SystemExit(f"{kind} output is not finite (mean {mean}, std {std})")
        if kind == "key":
            rms = float(values.square().mean().sqrt())
            scale = KEY_RMS / max(rms, 1e-6)
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)
            report.append(f"key: rms {rms:.3g} -> scaled by {scale:.3g}")
            continue
        if kind == "flow":
            scale = FLOW_STD / max(std, 1e-6)
            layer.weight.mul_(scale)
            if layer.bias is not None:
                layer.bias.mul_(scale)
        else:
            scale = LOGIT_STD / max(std, 1e-6)
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)
            # Centre the foreground-minus-background logit at zero.
            if kind == "two_class":
                layer.bias[1] -= scale * mean
            else:
                layer.bias -= scale * mean
        report.append(f"{kind}: mean {mean:.3g} std {std:.3g} -> scaled by {scale:.3g}")
    return report


def cmd_save_random(args: argparse.Namespace) -> None:
    started = time.time()
    official = _official(args.mode, args.official)
    _seed(args.seed)
    nets = official.build()
    _perturb(nets)
    davis = args.frames
    videos = args.videos or _video_names(davis)[: args.calib_videos]
    batches = list(official.loader(davis, videos))
    # BN statistics, then keys, BN again (the masks fed back changed), then the heads, and the
    # final BN statistics. The first pass may meet non-finite attention (see KEY_RMS); only
    # the key encoders' statistics (image input) matter for the key tempering after it.
    frames = args.calib_frames
    _calibrate(official, nets, batches, frames)
    report = _temper(official, nets, batches, frames, {"key"})
    _calibrate(official, nets, batches, frames)
    report += _temper(official, nets, batches, frames, {"two_class", "sigmoid", "flow"})
    _calibrate(official, nets, batches, frames)
    released = official.release(nets)
    bad = [k for k, v in _tensors(released) if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise SystemExit(f"non-finite tensors after calibration: {bad[:5]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(released, args.out)
    # Check that the file loads the way the official eval script loads it.
    check = official.build()
    official.load(check, args.out)
    print(
        json.dumps(
            {
                "mode": args.mode,
                "out": str(args.out),
                "seed": args.seed,
                "calibration_videos": videos,
                "calibration_frames": args.calib_frames,
                "tempering": report,
                "notes": HARNESS_NOTES,
                "seconds": round(time.time() - started, 1),
            },
            indent=1,
        )
    )


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def _spread(probs: np.ndarray) -> dict[str, float]:
    later = probs[1:] if probs.shape[0] > 1 else probs
    soft = (later > 0.01) & (later < 0.99)
    return {
        "entries_0.01_0.99": float(soft.mean()),
        "pixels_max_below_0.99": float((later.max(axis=1) < 0.99).mean()),
    }


def cmd_run(args: argparse.Namespace) -> None:
    kwargs = {"annotations": args.rmnet_annotations} if args.mode == "rmnet" else {}
    official = _official(args.mode, args.official, **kwargs)
    nets = official.build()
    official.load(nets, args.weights)
    args.out.mkdir(parents=True, exist_ok=True)
    videos: list[dict[str, Any]] = []
    total_seconds, total_frames = 0.0, 0
    loader: Iterator[Any] = iter(official.loader(args.davis, args.videos))
    for batch in loader:
        started = time.perf_counter()
        name, probs, labels, ids = official.infer(nets, batch, args.max_frames)
        seconds = time.perf_counter() - started
        probs_np = probs.float().cpu().numpy().astype(np.float32)
        labels_np = labels.cpu().numpy().astype(np.uint8)
        np.savez_compressed(args.out / f"{name}.npz", probs=probs_np, labels=labels_np)
        frames = int(probs_np.shape[0])
        total_seconds += seconds
        total_frames += frames
        entry = {
            "video": name,
            "frames": frames,
            "size": list(probs_np.shape[2:]),
            "channel_object_ids": ids,
            "seconds": round(seconds, 2),
            "seconds_per_frame": round(seconds / frames, 3),
            "labels_equal_argmax_of_probs": bool((probs_np.argmax(axis=1) == labels_np).all()),
            "spread": _spread(probs_np),
        }
        videos.append(entry)
        print(json.dumps(entry), flush=True)
    record = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "mode": args.mode,
        "repository": REPOSITORY[args.mode],
        "commit": _commit(args.official),
        "official": str(args.official),
        "weights": str(args.weights),
        "protocol": official.protocol,
        "max_frames": args.max_frames,
        "device": "cpu",
        "dtype": "float32",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds_per_frame": round(total_seconds / max(total_frames, 1), 3),
        "videos": videos,
        "notes": HARNESS_NOTES
        + [
            "CPU shim: torch.cuda.is_available() False, .cuda() no-op, device='cuda' -> cpu",
            "progress bars (tqdm in Run_video) replaced by a quiet iterator",
        ],
    }
    if args.mode == "rmnet":
        record["rmnet_annotations"] = args.rmnet_annotations
    (args.out / "official.json").write_text(json.dumps(record, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------

RELEASED: dict[str, dict[str, Any]] = {
    "stm": {
        "released_file": "STM_weights.pth",
        "published_at": "https://www.dropbox.com/s/mtfxdr93xc3q55i/STM_weights.pth?dl=1 "
        "(README 'Download weights'; eval_DAVIS.py loads 'STM_weights.pth' from the cwd)",
        "layout": "state_dict",
        "key_prefix": "module.",
        "notes": [
            "eval_DAVIS.py: model = nn.DataParallel(STM()); "
            "model.load_state_dict(torch.load('STM_weights.pth')) -> strict load, every key "
            "carries 'module.'; the file is a bare state dict (no wrapper dict)",
            "normalisation happens inside the encoders: buffers Encoder_M.mean/std and "
            "Encoder_Q.mean/std ([1,3,1,1], ImageNet) are in the file; input RGB in [0,1]",
            "num_batches_tracked: present in files saved by torch>=0.4.1 (README asks for torch "
            "1.0.1); BatchNorm's loader fills it in when absent only for old-version metadata, "
            "so a converter should accept and ignore it either way",
            "Encoder_M has separate bias-free 1-channel convs conv1_m (mask) and conv1_o "
            "(others) summed with the RGB conv1 before bn1: equivalent to one 5-channel conv "
            "with input order (R, G, B, mask, others)",
            "Encoder_M and Encoder_Q are two separate ResNet-50s cut after layer3 (res2=layer1, "
            "res3=layer2, res4=layer3, stride 16); no layer4/fc in the file",
            "Decoder.pred2 has 2 output channels (bg, fg) per object; softmax(...)[:,1] is the "
            "object probability before soft aggregation",
        ],
    },
    "stcn": {
        "released_file": "stcn.pth",
        "published_at": "https://drive.google.com/file/d/1mRrE0uCI2ktdWlUgapJI_KmgeIiF2eOm "
        "(README 'Pretrained models', s012; download_model.py saves it as saves/stcn.pth, "
        "eval_davis.py --model default 'saves/stcn.pth'); s03: Google Drive "
        "1JllXPJZola0G-g1aUQfXe9nLMBioj-aH; s0/s01: github.com/hkchengrex/STCN/releases/tag/1.0",
        "layout": "state_dict",
        "key_prefix": "",
        "notes": [
            "bare state dict without 'module.' (model/model.py saves "
            "self.STCN.module.state_dict()); eval_davis.py loads it strictly into "
            "model/eval_network.py STCN()",
            "value_encoder.conv1.weight is [64,5,7,7] (RGB, mask, others) in multi-object "
            "files; stage-0 files (s0) have [64,4,7,7] and eval_davis.py appends a zero "
            "[64,1,7,7] block as input channel 4 (training's load_network uses orthogonal init)",
            "value_encoder is model/mod_resnet.py ResNet-18 (cut after layer3): its convs "
            "(conv1, block convs, downsample.0) HAVE biases; key_encoder is torchvision "
            "ResNet-50 (cut after layer3, layer names res2/layer2/layer3) without conv biases",
            "normalisation happens in the data loader (dataset/range_transform.py "
            "im_normalization, ImageNet mean/std); the network has no mean/std buffers; "
            "padding to /16 is applied AFTER normalisation (pad value 0 = mean colour)",
            "num_batches_tracked present (trained with torch 1.8.1, docs/packages.txt)",
            "key set and shapes are identical for the training network model/network.py "
            "STCN(single_object=False) and the eval network",
            "decoder.pred has 1 output channel (sigmoid); key_proj is 64-d, key_comp 1024->512",
        ],
    },
    "hmmn": {
        "released_file": "HMMN_weights.pth",
        "published_at": "https://drive.google.com/file/d/16vOMm7hIdmC6yL4FlBO4p_miTeUoskt7 "
        "(README 'Trained model'; eval_DAVIS.py loads 'HMMN_weights.pth' from the cwd)",
        "layout": "state_dict",
        "key_prefix": "module.",
        "notes": [
            "eval_DAVIS.py: model = nn.DataParallel(HMMN()); "
            "model.load_state_dict(torch.load('HMMN_weights.pth', map_location='cpu')) -> "
            "strict, every key carries 'module.'; bare state dict",
            "normalisation inside the encoders (Encoder_M/Encoder_Q mean/std buffers in the "
            "file), input RGB in [0,1]",
            "num_batches_tracked present (README: torch 1.8.1)",
            "KV_Q_r3 and KV_Q_r2 are key-only (no Value conv in the file); KV_M_r3: key 128 / "
            "value 256, KV_M_r2: key 64 / value 128; Refine.convMemory has no bias",
            "Memory / Memory_topk modules have no parameters (Gaussian kernel sigma 3, flow "
            "window 7, top-k 32 at r3 and 8 at r2 are constructor constants)",
        ],
    },
    "rmnet": {
        "released_file": "RMNet-DAVIS.pth",
        "published_at": "https://gateway.infinitescript.com/?fileName=RMNet-DAVIS.pth "
        "(README 'Pretrained Models', 202 MB; also RMNet-YouTubeVOS.pth); passed with "
        "runner.py --test --weights",
        "layout": {
            "dict_keys": {
                "rmnet": "state_dict of nn.DataParallel(RMNet(cfg))",
                "tflownet": "state_dict of nn.DataParallel(TinyFlowNet(cfg))",
                "epoch_index": "int (written by core/train.py, unused by core/test.py)",
                "best_metrics": "dict {'J-Mean','F-Mean','JF-Mean'} (core/train.py, unused)",
            }
        },
        "key_prefix": "module.",
        "notes": [
            "core/test.py: checkpoint = torch.load(weights); "
            "tflownet.load_state_dict(checkpoint['tflownet']); "
            "rmnet.load_state_dict(checkpoint['rmnet']) with both nets in nn.DataParallel "
            "(only when CUDA is available: on a CPU-only machine the 'module.' keys do not load "
            "as written; utils/eval_server.py strips them with k.replace('module.', ''))",
            "normalisation in the data loader (utils/data_transforms.py Normalize: "
            "(rgb/255 - mean)/std, ImageNet); the encoders have no mean/std buffers",
            "num_batches_tracked presence depends on the torch that saved the file (README: "
            "torch >= 1.4 for the extensions); converters should accept and ignore it",
            "att_map_generator (RegionalAttentionMapGenerator, CUDA extension) has no "
            "parameters; TinyFlowNet has no BatchNorm",
            "encoder_memory has bias-free conv1_m / conv1_o beside the RGB conv1 (as STM); "
            "kv_memory/kv_query use key_conv/value_conv names (STM: Key/Value)",
        ],
    },
}


def _table(state: dict[str, torch.Tensor], prefix: str) -> list[list[Any]]:
    rows = []
    for key, tensor in state.items():
        if not key.startswith(prefix):
            raise SystemExit(f"key {key} lacks prefix {prefix!r}")
        rows.append([key[len(prefix) :], list(tensor.shape)])
    return rows


def cmd_tables(args: argparse.Namespace) -> None:
    official = _official(args.mode, args.official)
    _seed(0)
    nets = official.build()
    released = official.release(nets)
    facts = RELEASED[args.mode]
    prefix = facts["key_prefix"]
    if args.mode == "rmnet":
        tensors: Any = {
            "rmnet": _table(released["rmnet"], prefix),
            "tflownet": _table(released["tflownet"], prefix),
        }
        counts: Any = {k: len(v) for k, v in tensors.items()}
    else:
        tensors = _table(released, prefix)
        counts = len(tensors)
    notes = list(facts["notes"])
    if args.mode == "stcn":
        from model.network import STCN as TrainingSTCN

        training = {k: list(v.shape) for k, v in TrainingSTCN(False).state_dict().items()}
        if training != {k: shape for k, shape in tensors}:
            notes.append("WARNING: training network model/network.py differs from eval network")
    table = {
        "mode": args.mode,
        "repository": REPOSITORY[args.mode],
        "commit": _commit(args.official),
        "built_by": official.built_by,
        "released_file": facts["released_file"],
        "published_at": facts["published_at"],
        "layout": facts["layout"],
        "key_prefix": prefix,
        "entries": counts,
        "notes": notes,
        "tensors": tensors,
    }
    if args.mode == "stcn":
        table["variants"] = [
            {
                "key": "value_encoder.conv1.weight",
                "shape": [64, 4, 7, 7],
                "files": "s0 (stage-0 static-image pretraining, single object)",
                "eval_handling": "eval_davis.py concatenates zeros [64,1,7,7] -> [64,5,7,7]",
            }
        ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dump_table(table))
    print(f"wrote {args.out}: {counts} entries")


def _dump_table(table: dict[str, Any]) -> str:
    """JSON with one tensor per line."""
    head = {k: v for k, v in table.items() if k != "tensors"}
    text = json.dumps(head, indent=1)[:-2]

    def rows(items: list[list[Any]], indent: str) -> str:
        return ",\n".join(indent + json.dumps(item) for item in items)

    tensors = table["tensors"]
    if isinstance(tensors, dict):
        parts = [f'  "{name}": [\n{rows(items, "   ")}\n  ]' for name, items in tensors.items()]
        body = "{\n" + ",\n".join(parts) + "\n }"
    else:
        body = "[\n" + rows(tensors, "  ") + "\n ]"
    return text + ',\n "tensors": ' + body + "\n}\n"


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--mode", choices=MODES, required=True)
        p.add_argument("--official", type=Path, required=True, help="official repository")

    save = sub.add_parser("save-random", help="random weights in the released file's layout")
    common(save)
    save.add_argument("--frames", type=Path, required=True, help="DAVIS-layout root")
    save.add_argument("--out", type=Path, required=True)
    save.add_argument("--seed", type=int, default=0)
    save.add_argument("--videos", nargs="*", default=None, help="calibration videos")
    save.add_argument("--calib-videos", type=int, default=2)
    save.add_argument("--calib-frames", type=int, default=6)
    save.set_defaults(func=cmd_save_random)

    run = sub.add_parser("run", help="official inference protocol on the CPU")
    common(run)
    run.add_argument("--weights", type=Path, required=True)
    run.add_argument("--davis", type=Path, required=True, help="DAVIS-layout root")
    run.add_argument("--videos", nargs="+", required=True)
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--max-frames", type=int, default=None, help="first N frames only")
    run.add_argument(
        "--rmnet-annotations",
        choices=("all", "first"),
        default="all",
        help="rmnet: load every annotation file as core/test.py does (objects that appear "
        "later are injected from their first annotated frame), or only frame 0",
    )
    run.set_defaults(func=cmd_run)

    tables = sub.add_parser("tables", help="parameter table of the released checkpoint")
    common(tables)
    tables.add_argument("--out", type=Path, required=True)
    tables.set_defaults(func=cmd_tables)

    args = parser.parse_args(argv)
    args.official = args.official.resolve()
    args.func(args)


if __name__ == "__main__":
    main()
