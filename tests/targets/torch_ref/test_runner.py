"""The PyTorch runner: outputs as numpy, thread count restored afterwards."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from targets.torch_ref import TorchRunner


class TwoHeads(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x + 1, x * 2


def test_single_and_multiple_outputs() -> None:
    x = np.ones((2, 3), dtype=np.float32)
    with TorchRunner(nn.Identity()) as runner:
        assert runner.infer({"input": x})["output"].tolist() == x.tolist()
    with TorchRunner(TwoHeads()) as runner:
        out = runner.infer({"input": x})
        assert sorted(out) == ["output_0", "output_1"]
        np.testing.assert_array_equal(out["output_1"], x * 2)


def test_threads_set_and_restored() -> None:
    before = torch.get_num_threads()
    with TorchRunner(nn.Identity(), threads=1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
