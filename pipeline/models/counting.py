"""Parameter, multiply-accumulate and size counts, counted the way the MobileNet papers count.

MACs ("Mult-Adds"/"MAdds" in the papers) are the multiply-accumulates of the convolutions and the
fully-connected layers for one image: :class:`torch.utils.flop_counter.FlopCounterMode` counts
2 FLOPs per multiply-accumulate for exactly those op families (conv, mm/addmm/bmm, and attention,
which these models do not use) and nothing for BatchNorm, activations, pooling, the SE gate's
multiply or residual adds — so ``MACs = FLOPs / 2`` matches the papers' convention.

The forward pass runs on the ``meta`` device (shapes only, no arithmetic, no memory), so counting
a 224-px model is fast and the model itself is neither moved nor modified.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs", "fp32_bytes"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, resolution: int, in_channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on a ``1 × in_channels × resolution²`` input.

    Counted in eval mode (the model's own mode is restored afterwards), without autograd.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    meta_state = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    x = torch.empty(1, in_channels, resolution, resolution, device="meta")
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            functional_call(model, meta_state, (x,))
    finally:
        model.train(was_training)
    flops = counter.get_total_flops()
    return int(flops) // 2


def fp32_bytes(model: nn.Module, include_buffers: bool = False) -> int:
    """Bytes the parameters take as float32 (4 per parameter).

    With ``include_buffers``, floating-point buffers (BatchNorm running statistics) are added too,
    which is what an fp32 ``state_dict`` holds apart from the int64 ``num_batches_tracked``
    counters.
    """
    total = count_params(model)
    if include_buffers:
        total += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return 4 * total
