"""Mamba's selective scan in plain PyTorch, chunked: fast on CPU (and correct on any device).

The recurrence h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t, y_t = C_t h_t is linear, so within a chunk of
T steps it is a weighted cumulative sum. With G_t = exp(A * (dt_1 + ... + dt_t)) counted within the
chunk (G_0 = 1), the decay from step s to step t is G_t / G_s, and

    h_t = G_t * cumsum_s(x_s / G_s)  +  exp(dt_0 A) * G_t * (state entering the chunk),   x_s = dt_s B_s u_s.

G <= 1, and 1 / G stays finite (and x / G exact) while A * (dt summed over T - 1 steps) >= -MAX_CHUNK_DECAY,
so the chunk is halved until that holds (down to 1 step: the plain recurrence, always safe). Only the
states at chunk ends go from chunk to chunk, in a short loop.

The backward pass recomputes the states instead of keeping the batch x d_inner x seq x state tensors
alive between forward and backward, and gets dh from the same scan run backwards in time. The decays'
gradient needs exp(dt_t A) h_{t-1}, which the scan gives from its own sums: h_t - x_t would cancel in
channels that forget within a step. In fp32 the output and every gradient stay within 2x of the
sequential scan's error against float64 (tests/test_mamba_scan.py).
Work is done a few sequences at a time so the temporaries stay in the CPU's cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The largest decay exp(-MAX_CHUNK_DECAY) within a chunk. exp(60) ~ 1e26 would stay far from float32's
# limits (1e38), but each decay factor is off by about |its exponent| float32 units (the exponent itself
# is a rounded float32), so the bound also sets the precision: at 30 the scan's fp32 error stays within
# 2x of the sequential scan's (tests/test_mamba_scan.py), at 60 the dt and bias gradients reach 2x.
MAX_CHUNK_DECAY = 30.0
DEFAULT_CHUNK = 64
# Sequences per piece of work: about this many state elements (batch x d_inner x seq x state) at once;
# small on the CPU so the temporaries stay in its cache, large elsewhere to keep the launches few.
_TILE_ELEMENTS = {"cpu": 1 << 20}
_TILE_ELEMENTS_ELSEWHERE = 1 << 26


def chunked_selective_scan(
    hidden_states: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
):
    """Same arguments and results as transformers' `mamba_selective_scan` (u, dt: b x d x l; A: d x n;
    B, C: b x n x l); the scan runs in float32 and the result has the input's dtype.
    """
    input_dtype = hidden_states.dtype
    u = hidden_states.float()
    delta = dt.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    y, last_state = _ChunkedScan.apply(u, delta, A.float(), B.float(), C.float(), chunk_size)
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(input_dtype)
    return (y, last_state) if return_last_state else y


class _ChunkedScan(torch.autograd.Function):
    """y = C h for the scan above; keeps only its (small) inputs for backward."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk_size):
        chunk = safe_chunk_size(delta, A, chunk_size)
        Bt, Ct = B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous()  # b x l x n
        y = torch.empty_like(u)
        last = u.new_empty(u.shape[0], u.shape[1], A.shape[1])
        for s in _tiles(u, A.shape[1]):
            h = _states(u[s], delta[s], A, Bt[s], chunk)
            last[s] = h[:, :, -1]
            y[s] = torch.linalg.vecdot(h, Ct[s, None])
        ctx.save_for_backward(u, delta, A, Bt, Ct)
        ctx.chunk = chunk
        ctx.mark_non_differentiable(last)
        return y, last

    @staticmethod
    def backward(ctx, gy, _glast):
        u, delta, A, Bt, Ct = ctx.saved_tensors
        gy = gy.contiguous()
        gu, gdelta, gBt, gCt = (torch.empty_like(t) for t in (u, delta, Bt, Ct))
        gA = torch.zeros_like(A)
        # The adjoint runs backwards in time with each step's decay moved one step earlier:
        # dh_t = C_t dy_t + exp(dt_{t+1} A) dh_{t+1}; it is scanned in reversed time order.
        delta_next_reversed = F.pad(delta[..., 1:], (0, 1)).flip(-1)
        for s in _tiles(u, A.shape[1]):
            h, h_decayed = _states(u[s], delta[s], A, Bt[s], ctx.chunk, previous=True)
            gCt[s] = (h * gy[s, ..., None]).sum(1)
            g_reversed = gy[s].flip(-1)[..., None] * Ct[s].flip(1)[:, None]
            gh = _linear_scan(delta_next_reversed[s], A, g_reversed, ctx.chunk).flip(2)
            del g_reversed
            # x_t = dt_t u_t B_t
            q = torch.linalg.vecdot(gh, Bt[s, None])
            gu[s] = q * delta[s]
            gdelta[s] = q * u[s]
            gBt[s] = (gh * (delta[s] * u[s])[..., None]).sum(1)
            # d(dt_t A) = dh_t * exp(dt_t A) h_{t-1}
            del h
            r = h_decayed.mul_(gh)
            del gh
            gdelta[s] += torch.linalg.vecdot(r, A[:, None])
            # a summation, not a matmul over time: BLAS accumulates long dot products less accurately
            gA += r.mul_(delta[s][..., None]).sum(2).sum(0)
        return gu, gdelta, gA, gBt.transpose(1, 2), gCt.transpose(1, 2), None


def safe_chunk_size(delta: torch.Tensor, A: torch.Tensor, chunk_size: int) -> int:
    """The largest power of two <= chunk_size whose chunks decay by at most exp(-MAX_CHUNK_DECAY).

    A chunk of T steps needs exp(A * sum of dt over its last T - 1 steps) to stay finite; every window
    of T - 1 steps is checked (not only aligned ones), so the backward scan's shifted chunks are
    covered too. One step is always safe.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    chunk = 1 << (min(chunk_size, delta.shape[-1]).bit_length() - 1)
    rate = A.detach().abs().amax(dim=1)  # (d,)
    total = F.pad(delta.detach().cumsum(-1), (1, 0))
    while chunk > 1:
        window = total[..., chunk - 1 :] - total[..., : 1 - chunk]  # sum of dt over chunk - 1 steps
        if float((window.amax(dim=(0, 2)) * rate).max()) <= MAX_CHUNK_DECAY:
            break
        chunk //= 2
    return chunk


def _tiles(u: torch.Tensor, state_size: int):
    batch, d_inner, seq_len = u.shape
    elements = _TILE_ELEMENTS.get(u.device.type, _TILE_ELEMENTS_ELSEWHERE)
    step = max(1, elements // (d_inner * seq_len * state_size))
    return [slice(i, i + step) for i in range(0, batch, step)]


def _states(u, delta, A, Bt, chunk, previous=False):
    """Every state h_t (b x d x l x n) for the inputs x_t = dt_t B_t u_t; with `previous`, (h, decayed)
    where decayed_t = exp(dt_t A) h_{t-1}."""
    x = (delta * u)[..., None] * Bt[:, None]
    return _linear_scan(delta, A, x, chunk, previous)


def _linear_scan(delta: torch.Tensor, A: torch.Tensor, x: torch.Tensor, chunk: int, previous: bool = False):
    """h_t = exp(delta_t A) h_{t-1} + x_t from h_{-1} = 0, for delta: b x d x l, A: d x n, x: b x d x l x n.

    With `previous`, (h, decayed) where decayed_t = exp(delta_t A) h_{t-1}: that is h_t - x_t, but taken
    from the scan's own sums, since the subtraction cancels when the decay is strong.
    """
    batch, d_inner, seq_len, n = x.shape
    pad = -seq_len % chunk
    if pad:  # dt = 0 and x = 0 past the end: the state is carried unchanged and then dropped
        delta, x = F.pad(delta, (0, pad)), F.pad(x, (0, 0, 0, pad))
    k = (seq_len + pad) // chunk
    steps = delta.reshape(batch, d_inner, k, chunk)
    rate = A[:, None, None, :]  # d x 1 x 1 x n, broadcasts against b x d x k x t x n
    # G_t = exp(A * sum of dt over the chunk's steps 1..t): the decay from step s to step t of a chunk is
    # G_t / G_s, which is what `decay` = G_t / G_m keeps, m the chunk's middle step. Each factor carries a
    # rounding error of about |its exponent| float32 units; counted from the middle, the exponents are
    # half as large as from the start, and so is the error.
    after_first = steps.cumsum(-1) - steps[..., :1]
    middle = after_first[..., chunk // 2, None]
    decay = ((after_first - middle)[..., None] * rate).exp_()
    # h_t = decay_t * sums_t, sums_t = (sum of x_s / decay_s over the chunk's steps s <= t) + entering,
    # `entering` standing for the state the chunk starts from
    sums = (x.reshape(batch, d_inner, k, chunk, n) / decay).cumsum_(3)
    entering = None
    if k > 1:  # carry the state from chunk to chunk: through its first step, then by G = G_m * decay
        first = torch.exp(steps[..., 0, None] * A[:, None, :]).mul_(torch.exp(middle * A[:, None, :]))
        through = first * decay[:, :, :, -1]
        ends = sums[:, :, :, -1] * decay[:, :, :, -1]  # each chunk's last state, from its own inputs
        states = torch.empty_like(ends[:, :, : k - 1])  # the state after each chunk but the last
        out, end, step = states.unbind(2), ends.unbind(2), through.unbind(2)
        out[0].copy_(end[0])
        for i in range(1, k - 1):
            torch.addcmul(end[i], step[i], out[i - 1], out=out[i])
        entering = F.pad(first[:, :, 1:] * states, (0, 0, 1, 0))  # chunk 0 starts from 0
        sums += entering[:, :, :, None]
    if previous:  # decayed_t = decay_t * sums_{t-1}, and decay_t * entering at a chunk's first step
        decayed = torch.empty_like(sums)
        torch.mul(decay[:, :, :, 1:], sums[:, :, :, :-1], out=decayed[:, :, :, 1:])
        if entering is None:
            decayed[:, :, :, 0] = 0
        else:
            torch.mul(decay[:, :, :, 0], entering, out=decayed[:, :, :, 0])
    h = sums.mul_(decay).reshape(batch, d_inner, k * chunk, n)
    h = h[:, :, :seq_len] if pad else h
    if not previous:
        return h
    decayed = decayed.reshape(batch, d_inner, k * chunk, n)
    return h, (decayed[:, :, :seq_len] if pad else decayed)
