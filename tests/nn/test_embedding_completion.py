"""Cascade residual autoencoder structure and the masked MSE, on hand-set values."""

import torch
from torch import nn

from mlmm.nn.embedding_completion import CascadeResidualAutoencoder, masked_mse


def test_output_is_input_plus_sum_of_block_outputs():
    cra = CascadeResidualAutoencoder(dim=3, n_blocks=3, bottleneck=2, hidden=4)
    constants = [torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.5, 2.0, 0.0]), torch.ones(3)]
    with torch.no_grad():
        for block, c in zip(cra.blocks, constants, strict=True):
            last = block.decoder.net[-1]  # the decoder's output Linear
            last.weight.zero_()
            last.bias.copy_(c)
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    output, latents = cra(x)
    assert torch.allclose(output, x + sum(constants))
    assert latents.shape == (2, 3 * 2)


class _Half(nn.Module):
    """A stand-in block: residual = x / 2, latent = the first coordinate of its input."""

    def forward(self, x):
        return 0.5 * x, x[:, :1]


def test_each_block_starts_from_the_running_sum():
    cra = CascadeResidualAutoencoder(dim=2, n_blocks=3, bottleneck=1, hidden=4)
    cra.blocks = nn.ModuleList([_Half() for _ in range(3)])
    x = torch.tensor([[2.0, -4.0]])
    output, latents = cra(x)
    # x1 = 1.5 x, x2 = 2.25 x, x3 = 3.375 x; block k sees x_{k-1}
    assert torch.allclose(output, 3.375 * x)
    assert torch.allclose(latents, torch.tensor([[2.0, 3.0, 4.5]]))


def test_masked_mse_by_hand():
    prediction = torch.tensor([[[1.0, 1.0], [5.0, 5.0]], [[0.0, 2.0], [9.0, 9.0]]])
    target = torch.tensor([[[0.0, 3.0], [float("nan"), 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False], [True, False]])
    # selected squared errors: (1, 4) and (0, 4) -> 9 / 4
    assert torch.allclose(masked_mse(prediction, target, mask), torch.tensor(9.0 / 4.0))


def test_masked_mse_is_zero_with_nothing_selected():
    prediction = torch.randn(2, 3, 4, requires_grad=True)
    loss = masked_mse(
        prediction, torch.full((2, 3, 4), float("nan")), torch.zeros(2, 3, dtype=bool)
    )
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(prediction.grad, torch.zeros(2, 3, 4))
