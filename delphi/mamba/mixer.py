"""transformers' `MambaMixer.forward` with the selective scan as a parameter.

A line-for-line mirror of transformers 5's forward (same modules, same weights, same cache handling),
minus the mamba-ssm fused training shortcut, with `scan` doing the full-sequence scan. Keeping it a
mirror, rather than a new layer, is what keeps a delphi model a plain `MambaForCausalLM`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.models.mamba import modeling_mamba as mm


def mixer_forward(
    mixer: mm.MambaMixer,
    scan: Callable,
    hidden_states: torch.Tensor,
    cache=None,
    attention_mask: torch.LongTensor | None = None,
    **kwargs,
) -> torch.Tensor:
    seq_len = hidden_states.shape[1]
    dtype = hidden_states.dtype
    if cache is not None:
        conv_state = cache.get_conv_state(mixer.layer_idx, state_idx=0)
        recurrent_state = cache.get_recurrent_state(mixer.layer_idx, state_idx=0)
    else:
        conv_state, recurrent_state = None, None

    # 1. gated MLP's linear projection
    hidden_states = mm.apply_mask_to_padding_states(hidden_states, attention_mask)
    projected_states = mixer.in_proj(hidden_states).transpose(1, 2)
    A = -torch.exp(mixer.A_log.float())
    hidden_states_B_C, gate = projected_states.chunk(2, dim=1)

    # 2. causal convolution
    if conv_state is not None and seq_len == 1 and not cache.is_recording_past(mixer.layer_idx):
        hidden_states_B_C = mm.causal_conv1d_update(
            hidden_states_B_C,
            conv_state,
            mixer.conv1d.weight.squeeze(1),
            mixer.conv1d.bias,
            activation=mixer.activation,
        )
    else:
        if cache is not None:
            hidden_states_B_C = cache.update_conv_state(
                hidden_states_B_C, mixer.layer_idx, conv_kernel_size=mixer.conv_kernel_size
            )
        hidden_states_B_C = mm.causal_conv1d_fn(
            hidden_states_B_C,
            mixer.conv1d.weight.squeeze(1),
            mixer.conv1d.bias,
            activation=mixer.activation,
            **kwargs,
        )
        if cache is not None:
            hidden_states_B_C = hidden_states_B_C[:, :, -seq_len:]

    # 3. selective state space model
    hidden_states_B_C = mm.apply_mask_to_padding_states(hidden_states_B_C.transpose(1, 2), attention_mask)
    time_step, B, C = torch.split(
        mixer.x_proj(hidden_states_B_C),
        [mixer.time_step_rank, mixer.ssm_state_size, mixer.ssm_state_size],
        dim=-1,
    )
    time_step = mixer.dt_proj.weight @ time_step.transpose(1, 2)
    time_proj_bias = mixer.dt_proj.bias.float() if mixer.dt_proj.bias is not None else None

    if recurrent_state is not None and seq_len == 1:  # one generation step: the recurrence itself
        scan_output = mm.mamba_selective_state_update(
            recurrent_state,
            hidden_states_B_C.transpose(1, 2)[..., 0],
            time_step[..., 0],
            A,
            B[:, 0],
            C[:, 0],
            mixer.D,
            z=gate[..., 0],
            dt_bias=time_proj_bias,
            dt_softplus=True,
        ).unsqueeze(-1)
    else:
        output_final_state = cache is not None
        scan_result = scan(
            hidden_states_B_C.transpose(1, 2),
            time_step,
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            D=mixer.D.float(),
            z=gate,
            delta_bias=time_proj_bias,
            delta_softplus=True,
            return_last_state=output_final_state,
        )
        if output_final_state:
            scan_output, final_state = scan_result
            cache.update_recurrent_state(final_state, mixer.layer_idx)
        else:
            scan_output = scan_result

    # 4. final linear projection
    return mixer.out_proj(scan_output.transpose(1, 2).to(dtype))
