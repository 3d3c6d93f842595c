"""The U-Net of Buda et al. 2019, state-dict compatible with brain-segmentation-pytorch.

Four encoder levels and a bottleneck (features w, 2w, 4w, 8w, 16w; w = 32 in the paper), each
block conv3x3 (no bias) -> BatchNorm -> ReLU twice, 2x2 max-pool down, ConvTranspose2d up with
``cat(upsampled, skip)``, and a 1x1 head. ``forward`` returns logits: apply the sigmoid outside
(BCE under autocast needs logits).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def _block(in_ch: int, features: int, name: str) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            [
                (f"{name}conv1", nn.Conv2d(in_ch, features, 3, padding=1, bias=False)),
                (f"{name}norm1", nn.BatchNorm2d(features)),
                (f"{name}relu1", nn.ReLU(inplace=True)),
                (f"{name}conv2", nn.Conv2d(features, features, 3, padding=1, bias=False)),
                (f"{name}norm2", nn.BatchNorm2d(features)),
                (f"{name}relu2", nn.ReLU(inplace=True)),
            ]
        )
    )


class UNet(nn.Module):
    """Buda et al. U-Net; ``width`` is the first level's features, ``in_channels`` the inputs."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, width: int = 32):
        super().__init__()
        self.in_channels, self.out_channels, self.width = in_channels, out_channels, width
        f = width
        self.encoder1 = _block(in_channels, f, "enc1")
        self.pool1 = nn.MaxPool2d(2, 2)
        self.encoder2 = _block(f, f * 2, "enc2")
        self.pool2 = nn.MaxPool2d(2, 2)
        self.encoder3 = _block(f * 2, f * 4, "enc3")
        self.pool3 = nn.MaxPool2d(2, 2)
        self.encoder4 = _block(f * 4, f * 8, "enc4")
        self.pool4 = nn.MaxPool2d(2, 2)
        self.bottleneck = _block(f * 8, f * 16, "bottleneck")
        self.upconv4 = nn.ConvTranspose2d(f * 16, f * 8, 2, stride=2)
        self.decoder4 = _block(f * 16, f * 8, "dec4")
        self.upconv3 = nn.ConvTranspose2d(f * 8, f * 4, 2, stride=2)
        self.decoder3 = _block(f * 8, f * 4, "dec3")
        self.upconv2 = nn.ConvTranspose2d(f * 4, f * 2, 2, stride=2)
        self.decoder2 = _block(f * 4, f * 2, "dec2")
        self.upconv1 = nn.ConvTranspose2d(f * 2, f, 2, stride=2)
        self.decoder1 = _block(f * 2, f, "dec1")
        self.conv = nn.Conv2d(f, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(self.pool1(enc1))
        enc3 = self.encoder3(self.pool2(enc2))
        enc4 = self.encoder4(self.pool3(enc3))
        bottleneck = self.bottleneck(self.pool4(enc4))
        dec4 = self.decoder4(torch.cat((self.upconv4(bottleneck), enc4), dim=1))
        dec3 = self.decoder3(torch.cat((self.upconv3(dec4), enc3), dim=1))
        dec2 = self.decoder2(torch.cat((self.upconv2(dec3), enc2), dim=1))
        dec1 = self.decoder1(torch.cat((self.upconv1(dec2), enc1), dim=1))
        return self.conv(dec1)


def load_state_dict_strict(model: nn.Module, state_dict: dict, source: str = "weights") -> None:
    """``load_state_dict(strict=True)`` with a message that names the missing/extra/misshaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected keys {extra[:5]}{'...' if len(extra) > 5 else ''}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise ValueError(
            f"{source} do not fit a U-Net(in_channels={getattr(model, 'in_channels', '?')}, "
            f"width={getattr(model, 'width', '?')}): " + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=True)
