"""The CIFAR Network-In-Network (NIN) backbone, its RotNet / supervised heads, and the probes.

Architecture as in the paper (Gidaris et al., ICLR 2018): every conv is stride 1, padding
(k-1)/2, no bias, then BatchNorm2d and ReLU. Block 1 ends with MaxPool(3, 2, 1), block 2 with
AvgPool(3, 2, 1); blocks 3..5 keep 8×8. A `width` multiplier scales every channel
count (1.0 is the paper's network) so small CPU profiles can run.
"""

from __future__ import annotations

import torch
from torch import nn

from rotnet.errors import RotnetError
from rotnet.registry import ROTATION_SETS

# (first kernel, channels of the three convs) for block 1, block 2, and blocks 3..5.
_BLOCK_LAYOUT = {1: (5, (192, 160, 96)), 2: (5, (192, 192, 192)), 3: (3, (192, 192, 192))}


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
    # PyTorch's default init, as the authors' backbone had: their code defines a He-normal
    # routine for the NIN but never calls it. Probe heads are re-initialised by `init_head`.
    return [nn.Conv2d(in_channels, out_channels, kernel, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def nin_block(index: int, in_channels: int, width: float = 1.0) -> nn.Sequential:
    """NIN block `index` (1-based): k×k conv, two 1×1 convs, and the block's pooling."""
    kernel, channels = _BLOCK_LAYOUT[min(index, 3)]
    c1, c2, c3 = (_scaled(c, width) for c in channels)
    layers = conv_bn_relu(in_channels, c1, kernel) + conv_bn_relu(c1, c2, 1) + conv_bn_relu(c2, c3, 1)
    if index == 1:
        layers.append(nn.MaxPool2d(3, stride=2, padding=1))
    elif index == 2:
        layers.append(nn.AvgPool2d(3, stride=2, padding=1))
    block = nn.Sequential(*layers)
    block.out_channels = c3
    return block


class NINBackbone(nn.Module):
    """`num_blocks` NIN blocks; the output of every block is reachable for probes."""

    def __init__(self, num_blocks: int, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        if num_blocks not in (1, 2, 3, 4, 5):
            raise RotnetError(f"a NIN backbone has 1 to 5 blocks (got {num_blocks})")
        blocks, channels = [], in_channels
        for index in range(1, num_blocks + 1):
            block = nin_block(index, channels, width)
            blocks.append(block)
            channels = block.out_channels
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = [b.out_channels for b in blocks]

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Output of block `upto` (1-based; default: the last block)."""
        for block in self.blocks[: upto or len(self.blocks)]:
            x = block(x)
        return x

    def block_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs

    def truncated(self, upto: int) -> nn.Sequential:
        """The first `upto` blocks, sharing this backbone's modules (no copy)."""
        if not 1 <= upto <= len(self.blocks):
            raise RotnetError(
                f"block {upto} does not exist in a {len(self.blocks)}-block model")
        return nn.Sequential(*self.blocks[:upto])


class GlobalAvgPoolLinear(nn.Module):
    def __init__(self, in_channels: int, num_outputs: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class NINClassifier(nn.Module):
    """NIN backbone + global average pool + linear: the RotNet (K rotation classes)
    or, with 3 blocks and 10 classes, the supervised NIN baseline."""

    def __init__(self, num_blocks: int, num_outputs: int, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        self.backbone = NINBackbone(num_blocks, in_channels, width)
        self.head = GlobalAvgPoolLinear(self.backbone.out_channels[-1], num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def classifier_from_arch(arch: dict) -> NINClassifier:
    """The (untrained) NINClassifier a checkpoint's `arch` describes: a RotNet, with one output
    per rotation of its set, or the supervised NIN, with one per class."""
    outputs = arch["num_classes"] if "num_classes" in arch else len(ROTATION_SETS[arch["rotations"]])
    return NINClassifier(arch["blocks"], outputs, arch["in_channels"], arch["width"])


def init_head(head: nn.Module) -> nn.Module:
    """The authors' classifier-head init: conv weights He-normal over fan-out
    (std √(2 / (k·k·out))), linear weights N(0, 2 / out_features), biases 0, BatchNorm 1 / 0."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, (2.0 / m.out_features) ** 0.5)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return head


def nonlinear_probe(in_features: int, num_classes: int, hidden: int = 200) -> nn.Sequential:
    """Three fully connected layers on the flattened feature map (Tables 1-3)."""
    return init_head(nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    ))


def conv_probe(in_channels: int, num_classes: int, width: float = 1.0) -> nn.Sequential:
    """'RotNet + conv': a fresh NIN block 3 + global average pool + linear (Table 3)."""
    block = nin_block(3, in_channels, width)
    return init_head(nn.Sequential(block, GlobalAvgPoolLinear(block.out_channels, num_classes)))


def block_output_shape(backbone: NINBackbone, block: int, in_channels: int,
                       image_size: int = 32) -> tuple[int, int, int]:
    """C×H×W of block `block`'s output, by a dry run on one zero image."""
    trunk = backbone.truncated(block)
    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        param = next(backbone.parameters())
        out = trunk(torch.zeros(1, in_channels, image_size, image_size, device=param.device))
    trunk.train(was_training)
    return tuple(out.shape[1:])
