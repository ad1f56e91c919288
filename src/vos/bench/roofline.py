"""Roofline figures of the memory-read ops: FLOPs, bytes moved, arithmetic intensity and the
ideal time on a few data-centre GPUs, so that a measured time reads as a fraction of it.

Ideal time = max(FLOPs / peak FLOP rate for the dtype, bytes / peak memory bandwidth).

FLOPs are the two matrix products of every computed (query, memory) pair, 2·Ck + 2·Cv per
pair (`vos.ops.memory_read.memory_read_cost`, `window_read_cost`, `gather_read_cost`; 2·Ck
for `memory_top_cost`, which has no values); the
softmax's O(1)-per-pair work is not counted, as in flash-attention's convention.

Bytes, by the implementation's data flow:

- ``fused`` (the Triton kernels, flex_attention's fused kernel): the compulsory traffic of the
  op's cost function: query keys, memory keys and values read once (the valid pixels of a
  masked read), the readout written once, masks and indices read once. Re-reads of tiles
  served by cache are not counted, nor flex's layout copies.
- ``materialised`` (the PyTorch references): the same, plus the intermediates they write to
  memory and read back, at their least: memory_read's fp32 affinity ``[B, n, m]`` is written by
  the logits product, read and written by the softmax and read by the weighted sum (4 passes
  of 4 bytes per pair), memory_top's the same logits written and read once by ``topk``
  (2 passes); window_read's reference goes through the window one offset at a time, and per
  offset writes the fp32 product q ⊙ k ``[B, Ck, H, W]`` and reads it back for the channel sum,
  reads the shifted key and value, and reads and writes the readout it accumulates (3·Ck +
  3·Cv fp32 values per pixel and offset), and its fp32 window logits take 4 passes; gather_read's
  gathered candidate keys and values are written and read once more (2 passes over the
  candidate bytes), and its fp32 logits ``[B, M, K]`` take 4 passes. The references make more
  passes than this (an unfused softmax reads its input several times), so their ideal time
  is a lower bound.

Peak figures are NVIDIA's data sheets (dense, i.e. without structured sparsity: the data
sheets' tensor-core figures marked "with sparsity" are halved):
- H100 SXM5 80 GB (NVIDIA H100 Tensor Core GPU data sheet): FP32 67 TFLOPS; TF32 tensor core
  989 TFLOPS with sparsity; FP16 and BF16 tensor core 1,979 TFLOPS with sparsity; HBM3
  3.35 TB/s.
- H200 SXM 141 GB (NVIDIA H200 Tensor Core GPU data sheet): the H100 SXM's compute; HBM3e
  4.8 TB/s.
- A100 SXM4 80 GB (NVIDIA A100 Tensor Core GPU data sheet): FP32 19.5 TFLOPS; TF32 tensor core
  156 TFLOPS; FP16 and BF16 tensor core 312 TFLOPS (dense figures as printed); HBM2e
  2,039 GB/s.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2}
AFFINITY_BYTES = 4  # the references' logits and softmax weights are fp32 for every input dtype
MATERIALISED_AFFINITY_PASSES = 4  # written, read + written by the softmax, read by the product
MATERIALISED_GATHER_PASSES = 2  # a gathered tensor: written, then read


@dataclass(frozen=True)
class GpuPeaks:
    name: str
    fp32_flops: float  # CUDA cores (FMA), what IEEE fp32 products run on
    tf32_flops: float  # tensor cores, dense
    half_flops: float  # fp16 / bf16 tensor cores, dense
    bandwidth: float  # HBM, bytes per second

    def flops_for(self, dtype: str) -> float:
        if dtype == "fp32":
            return self.fp32_flops
        if dtype == "tf32":
            return self.tf32_flops
        if dtype in ("fp16", "bf16"):
            return self.half_flops
        raise ValueError(f"no peak for dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)}")


GPUS = {
    "h100_sxm": GpuPeaks("H100 SXM", 67e12, 989e12 / 2, 1979e12 / 2, 3.35e12),
    "h200_sxm": GpuPeaks("H200 SXM", 67e12, 989e12 / 2, 1979e12 / 2, 4.8e12),
    "a100_sxm": GpuPeaks("A100 SXM 80GB", 19.5e12, 156e12, 312e12, 2.039e12),
}


def gpu_key(device_name: str) -> str | None:
    """The `GPUS` entry of a CUDA device name (``torch.cuda.get_device_name``), or None when
    it is none of them (PCIe and NVL boards have other clocks and bandwidths)."""
    name = device_name.upper()
    if "PCIE" in name or "NVL" in name:
        return None
    if "H100" in name and ("SXM" in name or "HBM3" in name):
        return "h100_sxm"
    if "H200" in name:
        return "h200_sxm"
    if "A100" in name and "SXM" in name:
        return "a100_sxm"
    return None


def ideal_seconds(flops: float, bytes_moved: float, gpu: GpuPeaks, dtype: str) -> float:
    return max(flops / gpu.flops_for(dtype), bytes_moved / gpu.bandwidth)


def materialised_extra_bytes(op: str, setting: dict, pairs: float) -> float:
    """Bytes the PyTorch reference of ``op`` moves beyond the fused model (module docstring).

    ``pairs``: the (query, memory) pairs it computes (B·n·m for memory_read and memory_top, the in-frame
    window pairs for window_read, B·M·K for gather_read); ``setting`` the case's sizes, with
    ``dtype_bytes``."""
    affinity = MATERIALISED_AFFINITY_PASSES * AFFINITY_BYTES * pairs
    if op == "memory_read":
        return affinity
    if op == "memory_top":  # the fp32 logits written by the product, read once by topk
        return 2 * AFFINITY_BYTES * pairs
    channels = setting["Ck"] + setting["Cv"]
    if op == "window_read":  # per window offset, in fp32 (module docstring)
        height, width = setting["grid"]
        window = (2 * setting["radius"] + 1) ** 2
        per_offset = AFFINITY_BYTES * height * width * (3 * setting["Ck"] + 3 * setting["Cv"])
        return window * per_offset + affinity
    if op == "gather_read":
        gathered = setting["dtype_bytes"] * channels * pairs / setting.get("group", 1)
        return MATERIALISED_GATHER_PASSES * gathered + affinity
    raise ValueError(f"unknown op {op!r}")


def roofline_fields(
    flops: float, bytes_moved: float, dtype: str, measured_ms: float | None, gpu: str | None
) -> dict:
    """Intensity, the ideal time (µs) on every GPU of `GPUS`, and with a time measured on one
    of them (``gpu``), the fraction of its roofline reached: ideal / measured."""
    fields = {"flop_per_byte": flops / bytes_moved}
    for key, peaks in GPUS.items():
        fields[f"ideal_us_{key}"] = 1e6 * ideal_seconds(flops, bytes_moved, peaks, dtype)
    if gpu is not None and measured_ms:
        fields["roofline_fraction"] = fields[f"ideal_us_{gpu}"] / (1000 * measured_ms)
    return fields
