"""The U-Net is state-dict compatible with Buda et al.'s published network, and says why when not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from napari_lggseg.unet import UNet, load_state_dict_strict

KEYS_TSV = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "unet_state_dict_keys.tsv"
)
REFERENCE_PARAMETERS = 7_763_041


def _reference_shapes() -> dict[str, tuple[int, ...]]:
    if not KEYS_TSV.is_file():
        pytest.skip(f"reference key list not found at {KEYS_TSV}")
    shapes = {}
    for line in KEYS_TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return shapes


def _random_state_dict(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=gen) * 0.1
    return sd


def test_reference_state_dict_loads_exactly():
    shapes = _reference_shapes()
    assert len(shapes) == 118
    sd = _random_state_dict(shapes)
    model = UNet(3, 1, 32)
    assert list(model.state_dict()) == list(shapes), "key order differs from the reference network"
    load_state_dict_strict(model, sd, source="reference.pt")
    loaded = model.state_dict()
    for key, value in sd.items():
        assert torch.equal(loaded[key], value), key
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert learnable == REFERENCE_PARAMETERS
    in_file = sum(
        torch.Size(s).numel()
        for k, s in shapes.items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert in_file == REFERENCE_PARAMETERS


@pytest.mark.parametrize(
    "breakage, words",
    [
        ("missing", "missing keys ['decoder2.dec2norm1.running_mean']"),
        ("extra", "unexpected keys ['encoder5.weight']"),
        ("shape", "shape mismatch ['conv.weight: (1, 16, 1, 1) vs (1, 32, 1, 1)']"),
    ],
)
def test_misfitting_state_dict_names_the_key(breakage, words):
    sd = _random_state_dict(_reference_shapes())
    if breakage == "missing":
        del sd["decoder2.dec2norm1.running_mean"]
    elif breakage == "extra":
        sd["encoder5.weight"] = torch.zeros(3)
    else:
        sd["conv.weight"] = torch.zeros(1, 16, 1, 1)
    model = UNet(3, 1, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_state_dict_strict(model, sd, source="weights.safetensors")
    assert words in str(err.value)
    assert "weights.safetensors" in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), (
        "a failed load changed the model"
    )


def test_forward_gives_unbounded_logits_of_input_size():
    torch.manual_seed(0)
    model = UNet(3, 1, 32).eval()
    with torch.no_grad():
        for m in model.modules():  # make the head's output large, so a hidden sigmoid would show
            if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1:
                m.weight.mul_(50.0)
        out = model(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, 1, 64, 48)
    assert out.dtype == torch.float32
    assert out.min() < 0 or out.max() > 1, "forward must return logits, not probabilities"


@pytest.mark.parametrize("in_channels, width", [(1, 32), (3, 16), (5, 16), (5, 8)])
def test_variants(in_channels, width):
    model = UNet(in_channels, 1, width).eval()
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, 32, 32))
    assert out.shape == (1, 1, 32, 32)
    assert model.encoder1.enc1conv1.weight.shape == (width, in_channels, 3, 3)
    assert model.bottleneck.bottleneckconv1.weight.shape[0] == 16 * width
    # a variant's own weights load strictly into a fresh copy of it, and not into another variant
    load_state_dict_strict(UNet(in_channels, 1, width), model.state_dict())
    with pytest.raises(ValueError, match="shape mismatch"):
        load_state_dict_strict(UNet(in_channels + 1, 1, width), model.state_dict())
