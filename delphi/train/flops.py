"""Model FLOPs per token and device peak throughput, for model FLOPs utilization (MFU).

    MFU = training FLOPs per token x tokens per second / (peak FLOP/s of one device x devices)

FLOPs count a multiply-add as 2. Training a token costs 3x its forward pass (the backward pass computes
gradients with respect to both activations and weights: 2x the forward), as in Kaplan et al. (2020) and
PaLM (Chowdhery et al. 2022, appendix B). Only the work the model needs is counted: no activation
recomputation, no optimizer step (O(parameters) per step, not per token).

Llama (per token, sequence length T, L layers, d = hidden_size, H query heads, G key/value heads,
h = head_dim, f = intermediate_size, V = vocab_size):

    N = L (d H h + 2 d G h + H h d + 3 d f) + d V      parameters that take part in a matrix product
    training FLOPs per token = 6 N + 12 L H h T

`N` is the weights of every linear layer: the q, k, v, o projections, the gated MLP's three matrices
and the output layer (lm_head), which is a d x V product whether or not it is tied to the input
embedding. The input embedding is a table lookup (no FLOPs), so it is left out, as are RMSNorm gains
and biases (elementwise, O(d) per token). The second term is attention itself: q.k^T and the weighted
sum of values, 2 H h T each per layer per token forward, over the full T x T matrix (PaLM's convention
and what `torch.utils.flop_counter` counts; a causal kernel can skip half of it).

Mamba (d = hidden_size, E = intermediate_size = expand x d, S = state_size, R = time_step_rank,
K = conv_kernel; per layer and token, forward):

    in_proj  2 d (2E)        x and the gate z
    conv1d   2 E K           depthwise causal convolution
    x_proj   2 E (R + 2S)    the input-dependent dt, B and C
    dt_proj  2 R E
    scan     8 E S           per state element: dt*A, exp, dt*B, *x, h*dA, +, C*h, the sum over S
    out_proj 2 E d
    training FLOPs per token = 3 (L (4dE + 2EK + 2E(R+2S) + 2RE + 8ES + 2Ed) + 2 d V)

exp counts as one FLOP. Left out: norms, SiLU and softplus, the D skip and the gate multiply,
residual adds (O(E) per layer per token, under 2% at the stories suite's sizes). `FlopCounterMode`
counts matrix products and convolutions only, so it sees the projections, conv1d and lm_head but not
the scan's elementwise work.
"""

from __future__ import annotations

import logging
import os
import re

from delphi.errors import DelphiError

logger = logging.getLogger(__name__)

PEAK_FLOPS_ENV = "DELPHI_PEAK_FLOPS"

# Dense (no structured sparsity) peak FLOP/s of one device, from NVIDIA's datasheets (halved where a
# sheet quotes sparse figures). bf16/fp16: tensor cores with fp32 accumulation (what PyTorch uses;
# GeForce cards run it at half their fp16-accumulate rate). tf32: fp32 matmuls on tensor cores, used when
# TF32 is on (`training.tf32`, torch.backends.fp32_precision). fp32: plain fp32 (CUDA cores).
# Matched in order against torch.cuda.get_device_name(), lower-cased: the first pattern found wins.
_T = 1e12
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    (r"h100.*nvl|h200.*nvl", {"bf16": 835.5 * _T, "fp16": 835.5 * _T, "tf32": 417.5 * _T, "fp32": 60 * _T}),
    (r"h100.*pcie", {"bf16": 756 * _T, "fp16": 756 * _T, "tf32": 378 * _T, "fp32": 51.2 * _T}),
    (
        r"h100|h200|gh200|h800",
        {"bf16": 989.4 * _T, "fp16": 989.4 * _T, "tf32": 494.7 * _T, "fp32": 66.9 * _T},
    ),
    (r"a100|a800", {"bf16": 312 * _T, "fp16": 312 * _T, "tf32": 156 * _T, "fp32": 19.5 * _T}),
    (r"l40s", {"bf16": 366 * _T, "fp16": 366 * _T, "tf32": 183 * _T, "fp32": 91.6 * _T}),
    (r"l40\b", {"bf16": 181 * _T, "fp16": 181 * _T, "tf32": 90.5 * _T, "fp32": 90.5 * _T}),
    (r"\bl4\b", {"bf16": 121 * _T, "fp16": 121 * _T, "tf32": 60 * _T, "fp32": 30.3 * _T}),
    # A10G (AWS): no public datasheet; the A10's figures
    (r"\ba10g?\b", {"bf16": 125 * _T, "fp16": 125 * _T, "tf32": 62.5 * _T, "fp32": 31.2 * _T}),
    (r"\ba40\b", {"bf16": 149.7 * _T, "fp16": 149.7 * _T, "tf32": 74.8 * _T, "fp32": 37.4 * _T}),
    (r"a6000", {"bf16": 154.8 * _T, "fp16": 154.8 * _T, "tf32": 77.4 * _T, "fp32": 38.7 * _T}),
    (r"rtx 4090", {"bf16": 165.2 * _T, "fp16": 165.2 * _T, "tf32": 82.6 * _T, "fp32": 82.6 * _T}),
    (r"rtx 3090", {"bf16": 71 * _T, "fp16": 71 * _T, "tf32": 35.6 * _T, "fp32": 35.6 * _T}),
    # Volta and Turing: no bf16 tensor cores, no TF32
    (r"v100.*pcie", {"fp16": 112 * _T, "fp32": 14 * _T}),
    (r"v100", {"fp16": 125 * _T, "fp32": 15.7 * _T}),
    (r"\bt4\b", {"fp16": 65 * _T, "fp32": 8.1 * _T}),
]


def llama_flops_per_token(config, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token of a `LlamaConfig` at `seq_len` (module docstring)."""
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    ff = config.intermediate_size
    n = layers * (d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d + 3 * d * ff)
    n += d * vocab
    return 6.0 * n + 12.0 * layers * heads * head_dim * seq_len


def mamba_forward_flops_per_token(config) -> dict[str, float]:
    """Forward FLOPs per token of a `MambaConfig`, by part (the module docstring's table)."""
    d, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    e, s, k = config.intermediate_size, config.state_size, config.conv_kernel
    r = config.time_step_rank
    return {
        "in_proj": layers * 2.0 * d * 2 * e,
        "conv1d": layers * 2.0 * e * k,
        "x_proj": layers * 2.0 * e * (r + 2 * s),
        "dt_proj": layers * 2.0 * r * e,
        "scan": layers * 8.0 * e * s,
        "out_proj": layers * 2.0 * e * d,
        "lm_head": 2.0 * d * vocab,
    }


def mamba_flops_per_token(config) -> float:
    """Training FLOPs per token of a `MambaConfig`: 3x the forward (independent of the sequence length)."""
    return 3.0 * sum(mamba_forward_flops_per_token(config).values())


def flops_per_token(config, seq_len: int) -> float | None:
    """Training FLOPs per token for the architectures with a written formula (Llama, Mamba), else None."""
    model_type = getattr(config, "model_type", None)
    if model_type == "llama":
        return llama_flops_per_token(config, seq_len)
    if model_type == "mamba":
        return mamba_flops_per_token(config)
    return None


def peak_flops_env() -> float | None:
    """`DELPHI_PEAK_FLOPS` (FLOP/s of one device, e.g. 989e12) if set; a bad value is an error."""
    value = os.environ.get(PEAK_FLOPS_ENV, "").strip()
    if not value:
        return None
    try:
        peak = float(value)
    except ValueError:
        peak = -1.0
    if not peak > 0 or peak == float("inf"):
        raise DelphiError(
            f"{PEAK_FLOPS_ENV}={value!r} must be a positive number of FLOP/s per device, e.g. 989e12"
        )
    return peak


def lookup_peak_flops(device_name: str, precision: str) -> float | None:
    """Peak FLOP/s of the named device at `precision` (bf16, fp16, tf32, fp32), or None if not in the table."""
    name = device_name.lower()
    for pattern, peaks in PEAK_FLOPS:
        if re.search(pattern, name):
            return peaks.get(precision)
    return None


def matmul_precision(args) -> str:
    """What the training matmuls run in: bf16 / fp16 (mixed precision), tf32, or fp32."""
    if getattr(args, "bf16", False):
        return "bf16"
    if getattr(args, "fp16", False):
        return "fp16"
    import torch

    try:
        tf32 = torch.backends.cuda.matmul.fp32_precision == "tf32"
    except (AttributeError, RuntimeError):  # older torch, or the legacy and new TF32 APIs mixed
        tf32 = bool(getattr(torch.backends.cuda.matmul, "allow_tf32", False))
    return "tf32" if tf32 else "fp32"


def device_peak_flops(device, precision: str) -> float | None:
    """Peak FLOP/s of one training device: `DELPHI_PEAK_FLOPS` if set, else the table for CUDA devices."""
    override = peak_flops_env()
    if override is not None:
        return override
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    peak = lookup_peak_flops(name, precision)
    if peak is None:
        logger.info("no %s peak FLOP/s known for %r: set %s to log mfu", precision, name, PEAK_FLOPS_ENV)
    return peak


def mfu_inputs(model, args, seq_len: int) -> tuple[float | None, float | None]:
    """(training FLOPs per token, peak FLOP/s of all devices together) for a Trainer's model and args;
    either is None when unknown, and then no `mfu` is logged."""
    config = getattr(model, "config", None)
    per_token = flops_per_token(config, seq_len) if config is not None else None
    peak = device_peak_flops(args.device, matmul_precision(args))
    return per_token, (peak * args.world_size if peak is not None else None)
