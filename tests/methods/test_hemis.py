"""hemis: the abstraction layer's moments over the present modalities, checked by hand."""

from __future__ import annotations

import torch

import mlmm
from mlmm.data.specs import ModalitySpec, TaskSpec


def test_fused_embedding_is_mean_and_unbiased_variance_of_present_encodings():
    specs = [ModalitySpec(name, "vector", (2,)) for name in ("a", "b", "c")]
    model = mlmm.create_method("hemis", specs, TaskSpec("classification", 2), embed_dim=2)
    model.eval()
    inputs = {name: torch.randn(3, 2, generator=torch.Generator().manual_seed(i))
              for i, name in enumerate(("a", "b", "c"))}  # fmt: skip
    present = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    batch = mlmm.MultimodalBatch(inputs, present, ("a", "b", "c"), None)
    with torch.no_grad():
        fused = model(batch).embedding  # [3, 4]
        h = {name: model.encoders[name](inputs[name]) for name in ("a", "b", "c")}
    # three present: sum of squared deviations over |K| - 1 = 2
    mean = (h["a"][0] + h["b"][0] + h["c"][0]) / 3
    var = ((h["a"][0] - mean) ** 2 + (h["b"][0] - mean) ** 2 + (h["c"][0] - mean) ** 2) / 2
    assert torch.allclose(fused[0], torch.cat([mean, var]), atol=1e-6)
    # two present: (a - c)^2 / 2, i.e. squared deviations over |K| - 1 = 1
    mean = (h["a"][1] + h["c"][1]) / 2
    assert torch.allclose(fused[1], torch.cat([mean, (h["a"][1] - h["c"][1]) ** 2 / 2]), atol=1e-6)
    # one present: its encoding and variance exactly 0
    assert torch.equal(fused[2], torch.cat([h["b"][2], torch.zeros(2)]))
