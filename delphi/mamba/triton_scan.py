"""Mamba's selective scan as Triton kernels (forward and backward): the fast path on GPUs without mamba-ssm.

Like mamba-ssm's CUDA kernel, each program owns one sequence and a block of channels, keeps their
state_size-wide states in registers and walks the sequence once; softplus(dt + bias), the D skip
connection and the silu(z) gate are fused in. Nothing of size batch x d_inner x seq x state is
stored: the backward kernel first re-runs the scan to record the state at every CHUNK-th step
(transient, 1/CHUNK of that size), then goes through the chunks from last to first, recomputing each
chunk's states into a small per-program buffer and walking it backwards for the gradients.

Runs on CPU under TRITON_INTERPRET=1, which is how the tests check it without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_D = 32  # channels per program
CHUNK = 16  # steps between recorded states in the backward pass


@triton.jit
def _softplus(x):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|); log1p via Kahan's trick, exact enough for tiny arguments
    e = tl.exp(-tl.abs(x))
    one_plus = 1.0 + e
    log1p = tl.where(one_plus == 1.0, e, tl.log(one_plus) * (e / (one_plus - 1.0)))
    return tl.where(x > 20.0, x, tl.maximum(x, 0.0) + log1p)  # torch's threshold: identity above 20


@triton.jit
def _step_inputs(
    u_ptr, dt_ptr, B_ptr, t, d, n, dm, nm, bias, su_l, su_d, sdt_l, sdt_d, sB_l, sB_n,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):  # fmt: skip
    """u_t, dt_t (after bias and softplus), dt_t before softplus, and B_t for one step."""
    u = tl.load(u_ptr + t * su_l + d * su_d, mask=dm, other=0.0).to(tl.float32)
    dt_raw = tl.load(dt_ptr + t * sdt_l + d * sdt_d, mask=dm, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt_raw += bias
    dt = dt_raw
    if SOFTPLUS:
        dt = _softplus(dt_raw)
    Bt = tl.load(B_ptr + t * sB_l + n * sB_n, mask=nm, other=0.0).to(tl.float32)
    return u, dt, dt_raw, Bt


@triton.jit
def _advance(
    h, A, t0, t1, u_ptr, dt_ptr, B_ptr, d, n, dm, nm, bias,
    su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, work_ptr, tile,
    HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    RECORD: tl.constexpr,
):  # fmt: skip
    """The forward state after steps t0 .. t1 - 1, starting from `h` (the state before t0): the backward
    pass's recomputation. With RECORD, the state after step t is also stored in work slot t - t0 + 1."""
    for t in range(t0, t1):
        u, dt, _, Bt = _step_inputs(
            u_ptr, dt_ptr, B_ptr, t, d, n, dm, nm, bias,
            su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, HAS_BIAS, SOFTPLUS,
        )  # fmt: skip
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        if RECORD:
            tl.store(work_ptr + (t - t0 + 1) * BLOCK_D * BLOCK_N + tile, h)
    return h


@triton.jit
def _scan_forward_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, last_ptr,
    L, D_INNER, N,
    su_b, su_l, su_d, sdt_b, sdt_l, sdt_d, sB_b, sB_l, sB_n, sC_b, sC_l, sC_n, sz_b, sz_l, sz_d,
    sy_b, sy_l, sy_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dm, nm = d < D_INNER, n < N
    dn_mask = dm[:, None] & nm[None, :]
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dm, other=0.0).to(tl.float32)
    skip = 0.0
    if HAS_D:
        skip = tl.load(D_ptr + d, mask=dm, other=0.0).to(tl.float32)
    u_ptr += b * su_b
    dt_ptr += b * sdt_b
    B_ptr += b * sB_b
    C_ptr += b * sC_b
    z_ptr += b * sz_b
    y_ptr += b * sy_b
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for t in range(L):
        u, dt, _, Bt = _step_inputs(
            u_ptr, dt_ptr, B_ptr, t, d, n, dm, nm, bias,
            su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, HAS_BIAS, SOFTPLUS,
        )  # fmt: skip
        Ct = tl.load(C_ptr + t * sC_l + n * sC_n, mask=nm, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * u)[:, None] * Bt[None, :]
        y = tl.sum(h * Ct[None, :], axis=1)
        if HAS_D:
            y += skip * u
        if HAS_Z:
            z = tl.load(z_ptr + t * sz_l + d * sz_d, mask=dm, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(y_ptr + t * sy_l + d * sy_d, y.to(y_ptr.dtype.element_ty), mask=dm)
    tl.store(last_ptr + (b * D_INNER + d[:, None]) * N + n[None, :], h, mask=dn_mask)


@triton.jit
def _scan_backward_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, gy_ptr,
    starts_ptr, work_ptr,
    gu_ptr, gdt_ptr, gz_ptr, gA_ptr, gD_ptr, gbias_ptr, gB_ptr, gC_ptr,
    L, D_INNER, N,
    su_b, su_l, su_d, sdt_b, sdt_l, sdt_d, sB_b, sB_l, sB_n, sC_b, sC_l, sC_n, sz_b, sz_l, sz_d,
    sgy_b, sgy_l, sgy_d,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    pd = tl.program_id(1)
    blocks = tl.num_programs(1)
    d = pd * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    dm, nm = d < D_INNER, n < N
    dn_mask = dm[:, None] & nm[None, :]
    A = tl.load(A_ptr + d[:, None] * N + n[None, :], mask=dn_mask, other=0.0)
    bias = 0.0
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dm, other=0.0).to(tl.float32)
    skip = 0.0
    if HAS_D:
        skip = tl.load(D_ptr + d, mask=dm, other=0.0).to(tl.float32)
    u_ptr += b * su_b
    dt_ptr += b * sdt_b
    B_ptr += b * sB_b
    C_ptr += b * sC_b
    z_ptr += b * sz_b
    gy_ptr += b * sgy_b
    # outputs are contiguous: gu, gdt, gz as b x l x d; gB, gC partial sums as b x blocks x l x n
    gu_ptr += b * L * D_INNER
    gdt_ptr += b * L * D_INNER
    gz_ptr += b * L * D_INNER
    gB_ptr += (b * blocks + pd) * L * N
    gC_ptr += (b * blocks + pd) * L * N
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + n[None, :]  # offsets in a work slot
    work_ptr += (b * blocks + pd) * (CHUNK + 1) * BLOCK_D * BLOCK_N
    chunks = tl.cdiv(L, CHUNK)
    starts_ptr += (b * chunks * D_INNER + d[:, None]) * N + n[None, :]

    # 1. the state entering every chunk
    h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    for c in range(chunks):
        tl.store(starts_ptr + c * D_INNER * N, h, mask=dn_mask)
        h = _advance(
            h, A, c * CHUNK, tl.minimum(L, c * CHUNK + CHUNK), u_ptr, dt_ptr, B_ptr, d, n, dm, nm, bias,
            su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, work_ptr, tile,
            HAS_BIAS, SOFTPLUS, BLOCK_D, BLOCK_N, False,
        )  # fmt: skip

    # 2. chunks from last to first: recompute their states, then walk them backwards
    carry = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)  # exp(dt_{t+1} A) * dh_{t+1}
    # the sums over time of gA, gD and gbias are taken per chunk, then over chunks: one running sum over
    # the whole sequence loses about L float32 units, this about CHUNK + L / CHUNK
    gA = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    gD = tl.zeros([BLOCK_D], dtype=tl.float32)
    gbias = tl.zeros([BLOCK_D], dtype=tl.float32)
    for ci in range(chunks):
        c = chunks - 1 - ci
        gA_chunk = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
        gD_chunk = tl.zeros([BLOCK_D], dtype=tl.float32)
        gbias_chunk = tl.zeros([BLOCK_D], dtype=tl.float32)
        t0 = c * CHUNK
        t1 = tl.minimum(L, t0 + CHUNK)
        h = tl.load(starts_ptr + c * D_INNER * N, mask=dn_mask, other=0.0)
        tl.store(work_ptr + tile, h)
        h = _advance(
            h, A, t0, t1, u_ptr, dt_ptr, B_ptr, d, n, dm, nm, bias,
            su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, work_ptr, tile,
            HAS_BIAS, SOFTPLUS, BLOCK_D, BLOCK_N, True,
        )  # fmt: skip
        tl.debug_barrier()
        h = tl.load(work_ptr + (t1 - t0) * BLOCK_D * BLOCK_N + tile)
        for i in range(t1 - t0):
            t = t1 - 1 - i
            u, dt, dt_raw, Bt = _step_inputs(
                u_ptr, dt_ptr, B_ptr, t, d, n, dm, nm, bias,
                su_l, su_d, sdt_l, sdt_d, sB_l, sB_n, HAS_BIAS, SOFTPLUS,
            )  # fmt: skip
            Ct = tl.load(C_ptr + t * sC_l + n * sC_n, mask=nm, other=0.0).to(tl.float32)
            gy = tl.load(gy_ptr + t * sgy_l + d * sgy_d, mask=dm, other=0.0).to(tl.float32)
            h_prev = tl.load(work_ptr + (t - t0) * BLOCK_D * BLOCK_N + tile)
            g_scan = gy  # gradient of the scan's output before the gate
            if HAS_Z:
                z = tl.load(z_ptr + t * sz_l + d * sz_d, mask=dm, other=0.0).to(tl.float32)
                sig = tl.sigmoid(z)
                y = tl.sum(h * Ct[None, :], axis=1)
                if HAS_D:
                    y += skip * u
                gz = gy * y * sig * (1.0 + z * (1.0 - sig))
                tl.store(gz_ptr + t * D_INNER + d, gz.to(gz_ptr.dtype.element_ty), mask=dm)
                g_scan = gy * z * sig
            gD_chunk += g_scan * u
            tl.store(gC_ptr + t * N + n, tl.sum(g_scan[:, None] * h, axis=0), mask=nm)
            gh = carry + g_scan[:, None] * Ct[None, :]
            # x_t = dt_t u_t B_t
            tl.store(gB_ptr + t * N + n, tl.sum(gh * (dt * u)[:, None], axis=0), mask=nm)
            q = tl.sum(gh * Bt[None, :], axis=1)
            gu = q * dt
            if HAS_D:
                gu += skip * g_scan
            # the decay exp(dt_t A) multiplies h_{t-1}
            decay = tl.exp(dt[:, None] * A)
            r = gh * decay * h_prev
            gdt = q * u + tl.sum(r * A, axis=1)
            gA_chunk += r * dt[:, None]
            if SOFTPLUS:
                gdt = gdt * tl.where(dt_raw > 20.0, 1.0, tl.sigmoid(dt_raw))
            gbias_chunk += gdt
            tl.store(gu_ptr + t * D_INNER + d, gu.to(gu_ptr.dtype.element_ty), mask=dm)
            tl.store(gdt_ptr + t * D_INNER + d, gdt.to(gdt_ptr.dtype.element_ty), mask=dm)
            carry = gh * decay
            h = h_prev
        gA += gA_chunk
        gD += gD_chunk
        gbias += gbias_chunk
        tl.debug_barrier()
    tl.store(gA_ptr + (b * D_INNER + d[:, None]) * N + n[None, :], gA, mask=dn_mask)
    tl.store(gD_ptr + b * D_INNER + d, gD, mask=dm)
    tl.store(gbias_ptr + b * D_INNER + d, gbias, mask=dm)


def triton_selective_scan(
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
):
    """Same arguments and results as transformers' `mamba_selective_scan` (u, dt, z: b x d x l;
    A: d x n; B, C: b x n x l; any strides); states in float32, the result in the input's dtype.
    """
    y, last = _TritonScan.apply(hidden_states, dt, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last) if return_last_state else y


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(batch, seq, channel) strides of a b x channel x l tensor."""
    return t.stride(0), t.stride(2), t.stride(1)


class _TritonScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus):
        batch, d_inner, seq_len = u.shape
        n = A.shape[1]
        A = A.float().contiguous()
        y = u.new_empty(batch, seq_len, d_inner)  # b x l x d: what out_proj reads next
        last = u.new_empty(batch, d_inner, n, dtype=torch.float32)
        flags = _flags(D, z, delta_bias, softplus, n)
        _scan_forward_kernel[(batch, triton.cdiv(d_inner, BLOCK_D))](
            u, delta, A, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), y, last,
            seq_len, d_inner, n,
            *_strides(u), *_strides(delta), *_strides(B), *_strides(C), *_strides(_or(z, u)),
            y.stride(0), y.stride(1), y.stride(2),
            **flags,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
        ctx.softplus = softplus
        ctx.mark_non_differentiable(last)
        return y.transpose(1, 2), last

    @staticmethod
    def backward(ctx, gy, _glast):
        u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
        batch, d_inner, seq_len = u.shape
        n = A.shape[1]
        blocks = triton.cdiv(d_inner, BLOCK_D)
        flags = _flags(D, z, delta_bias, ctx.softplus, n)
        f32 = dict(device=u.device, dtype=torch.float32)
        starts = torch.empty(batch, triton.cdiv(seq_len, CHUNK), d_inner, n, **f32)
        work = torch.empty(batch, blocks, CHUNK + 1, BLOCK_D, flags["BLOCK_N"], **f32)
        gu = u.new_empty(batch, seq_len, d_inner)
        gdt = delta.new_empty(batch, seq_len, d_inner)
        gz = (z if z is not None else u).new_empty(batch, seq_len, d_inner)
        gA, gD, gbias = torch.empty(batch, d_inner, n, **f32), *torch.empty(2, batch, d_inner, **f32)
        gB, gC = torch.empty(2, batch, blocks, seq_len, n, **f32)
        _scan_backward_kernel[(batch, blocks)](
            u, delta, A, B, C, _or(D, u), _or(z, u), _or(delta_bias, u), gy,
            starts, work,
            gu, gdt, gz, gA, gD, gbias, gB, gC,
            seq_len, d_inner, n,
            *_strides(u), *_strides(delta), *_strides(B), *_strides(C), *_strides(_or(z, u)), *_strides(gy),
            CHUNK=CHUNK,
            **flags,
        )  # fmt: skip
        return (
            gu.transpose(1, 2),
            gdt.transpose(1, 2),
            gA.sum(0),
            gB.sum(1).transpose(1, 2).to(B.dtype),
            gC.sum(1).transpose(1, 2).to(C.dtype),
            None if D is None else gD.sum(0).to(D.dtype),
            None if z is None else gz.transpose(1, 2),
            None if delta_bias is None else gbias.sum(0).to(delta_bias.dtype),
            None,
        )


def _flags(D, z, delta_bias, softplus: bool, n: int) -> dict:
    return dict(
        HAS_D=D is not None,
        HAS_Z=z is not None,
        HAS_BIAS=delta_bias is not None,
        SOFTPLUS=bool(softplus),
        BLOCK_D=BLOCK_D,
        BLOCK_N=triton.next_power_of_2(n),
    )


def _or(t: torch.Tensor | None, fallback: torch.Tensor) -> torch.Tensor:
    """A stand-in pointer for an absent optional input (the kernel never reads it)."""
    return fallback if t is None else t
