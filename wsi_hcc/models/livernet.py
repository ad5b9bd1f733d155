"""LiverNet (Aatresh et al., Int J CARS 2021) as the authors trained it, so their Keras weights load.

The released Keras code has bugs that shaped the trained graph, and the released weights depend on
them, so the default ``aspp="trained"`` keeps every one:

* CBAM channel attention applies the sigmoid twice (weights lie in (0.5, 0.731)).
* In each ASPP block, branches b1 and b2 are plain 1x1 conv + BN + ReLU (their dilated depthwise
  convs are overwritten before use), b3 is b2's output again, and b5 is the only dilated branch.
* Keras "same" max pooling (3x3, stride 2) pads only bottom/right on even inputs.

``aspp="intended"`` builds the design the paper describes (depthwise separable branches at
dilations 2, 3, 6, 8); no released weights fit it.

Keras defaults are kept where they change numbers: BatchNorm eps 1e-3 and momentum 0.99 (PyTorch
0.01), LeakyReLU slope 0.3. The model takes NCHW floats and does no preprocessing; the released
weights expect BGR / 255 without mean/std normalisation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LiverNet", "TFSameMaxPool2d"]

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01
_LEAKY_SLOPE = 0.3
_ASPP_DESIGNS = ("trained", "intended")


def _bn2d(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _bn1d(channels: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class TFSameMaxPool2d(nn.Module):
    """Max pooling with TensorFlow's "same" padding: the odd padded cell goes bottom/right.

    ``nn.MaxPool2d(3, 2, padding=1)`` pads both sides, which shifts every window by one pixel on
    even inputs; on LiverNet that moves probabilities by up to 0.5. Padding is -inf because the
    pooled maps come from LeakyReLU and can be negative everywhere.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride

    def _padding(self, size: int) -> tuple[int, int]:
        total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel_size - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._padding(x.shape[-2])
        left, right = self._padding(x.shape[-1])
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


class ConvBnReLU(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 1, bias: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size, padding=kernel_size // 2, bias=bias)
        self.bn = _bn2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Stem(nn.Module):
    """Two 3x3 conv + BN + ReLU at full resolution."""

    def __init__(self, in_chans: int, channels: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, channels, 3, padding=1)
        self.bn1 = _bn2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = _bn2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al. 2018), with the released code's double sigmoid."""

    def __init__(self, channels: int, reduction: int = 8, spatial_kernel: int = 7):
        super().__init__()
        self.mlp1 = nn.Linear(channels, channels // reduction)
        self.mlp2 = nn.Linear(channels // reduction, channels)
        self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2, bias=False)

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        return self.mlp2(F.relu(self.mlp1(v)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self._mlp(x.mean(dim=(2, 3))) + self._mlp(x.amax(dim=(2, 3)))
        # The trained weights saw sigmoid(sigmoid(z)); a single sigmoid changes every output.
        x = x * torch.sigmoid(torch.sigmoid(z))[:, :, None, None]
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial_conv(pooled))


class BottleneckResidual(nn.Module):
    """C -> C/4 -> C with an identity shortcut and LeakyReLU(0.3)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = channels // 4
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1)
        self.bn1 = _bn2d(hidden)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1)
        self.bn2 = _bn2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.bn1(self.conv1(x)), _LEAKY_SLOPE)
        return F.leaky_relu(x + self.bn2(self.conv2(y)), _LEAKY_SLOPE)


class AttentionStage(nn.Module):
    """3x3 conv + BN + ReLU, CBAM, bottleneck residual block; resolution unchanged."""

    def __init__(self, in_chans: int, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, channels, 3, padding=1)
        self.bn = _bn2d(channels)
        self.cbam = CBAM(channels)
        self.res = BottleneckResidual(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.cbam(F.relu(self.bn(self.conv(x)))))


class SeparableConvBnReLU(nn.Module):
    """Dilated depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU; no conv biases."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.dw = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, groups=channels,
                            bias=False)
        self.dw_bn = _bn2d(channels)
        self.pw = nn.Conv2d(channels, channels, 1, bias=False)
        self.pw_bn = _bn2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dw_bn(self.dw(x)))
        return F.relu(self.pw_bn(self.pw(x)))


class ImagePooling(ConvBnReLU):
    """Global mean -> 1x1 conv + BN + ReLU, broadcast back (Keras' bilinear resize of a 1x1 map)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.mean(dim=(2, 3), keepdim=True)).expand_as(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling; keeps shape. Concatenation order is [b4, b0, b1, b2, b3, b5]."""

    def __init__(self, channels: int, design: str = "trained"):
        super().__init__()
        self.b0 = ConvBnReLU(channels, channels)
        if design == "trained":
            self.b1 = ConvBnReLU(channels, channels)
            self.b2 = ConvBnReLU(channels, channels)
            self.b3 = None  # the trained graph reuses b2's output as b3
        else:
            self.b1 = SeparableConvBnReLU(channels, dilation=2)
            self.b2 = SeparableConvBnReLU(channels, dilation=3)
            self.b3 = SeparableConvBnReLU(channels, dilation=6)
        self.b4 = ImagePooling(channels, channels)
        self.b5 = SeparableConvBnReLU(channels, dilation=8)
        self.fuse = ConvBnReLU(6 * channels, channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b2 = self.b2(x)
        b3 = b2 if self.b3 is None else self.b3(x)
        return self.fuse(torch.cat([self.b4(x), self.b0(x), self.b1(x), b2, b3, self.b5(x)], dim=1))


class Head(nn.Module):
    """Dense 256 + BN + ReLU + dropout, dense 256 + BN + ReLU, then the classifier (logits)."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float, hidden: int = 256):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.bn1 = _bn1d(hidden)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Linear(hidden, hidden)
        self.bn2 = _bn1d(hidden)
        self.classifier = nn.Linear(hidden, num_classes) if num_classes > 0 else nn.Identity()

    def pre_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(F.relu(self.bn1(self.fc1(x))))
        return F.relu(self.bn2(self.fc2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pre_logits(x))


class LiverNet(nn.Module):
    """LiverNet for 224x224 H&E patches; ``forward`` returns logits (the Keras model's softmax is left out).

    Stages: stem (224px, 32 ch) -> pool -> stage2 (112px, 64 ch) -> pool -> stage3 (56px, 128 ch)
    -> pool, with an ASPP block on each pooled map (aspp1: 112px x 32, aspp2: 56px x 64,
    aspp3: 28px x 128), whose global averages form the 224-d hypercolumn feeding the dense head.
    """

    # The 28x28x128 map from aspp3 is the deepest spatial map and feeds the global pool directly.
    cam_layer = "aspp3"
    num_features = 256

    def __init__(self, num_classes: int = 4, aspp: str = "trained", in_chans: int = 3, drop_rate: float = 0.3):
        super().__init__()
        if aspp not in _ASPP_DESIGNS:
            raise ValueError(f"aspp must be one of {_ASPP_DESIGNS}, got {aspp!r}")
        self.num_classes = num_classes
        self.aspp_design = aspp
        self.stem = Stem(in_chans, 32)
        self.stage2 = AttentionStage(32, 64)
        self.stage3 = AttentionStage(64, 128)
        self.pool = TFSameMaxPool2d(3, 2)
        self.aspp1 = ASPP(32, aspp)
        self.aspp2 = ASPP(64, aspp)
        self.aspp3 = ASPP(128, aspp)
        self.hypercolumn_features = 32 + 64 + 128
        self.head = Head(self.hypercolumn_features, num_classes, drop_rate, hidden=self.num_features)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW input -> (N, 224) global average of the hypercolumn."""
        x1 = self.pool(self.stem(x))
        x2 = self.pool(self.stage2(x1))
        x3 = self.pool(self.stage3(x2))
        # Keras upsamples the three ASPP maps (x2, x4, x8, half-pixel bilinear) to 224x224,
        # concatenates them and averages. For integer factors each source pixel's bilinear weights
        # sum to the factor along each axis (the clamped border taps give the edge pixels exactly
        # the weight the missing outer taps would have), so the mean of the upsampled map is the
        # mean of the map itself. Averaging first is therefore exact and skips a 224x224x224
        # tensor (45 MB per image).
        return torch.cat([a.mean(dim=(2, 3)) for a in (self.aspp1(x1), self.aspp2(x2), self.aspp3(x3))], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head.pre_logits(x) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
