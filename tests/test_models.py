"""The NIN backbone, the RotNet head and the probes against the reference architecture
(the paper's NIN, Gidaris et al., ICLR 2018): sizes are computed here from the table, not read from rotnet.models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rotnet.errors import RotnetError
from rotnet.models import (NINBackbone, NINClassifier, block_output_shape, conv_probe,
                           nonlinear_probe)

# The paper's CIFAR Network-In-Network backbone: per block, the three
# convs as (kernel, in, out); blocks 4 and 5 are "as B3".
B1 = [(5, 3, 192), (1, 192, 160), (1, 160, 96)]
B2 = [(5, 96, 192), (1, 192, 192), (1, 192, 192)]
B3 = [(3, 192, 192), (1, 192, 192), (1, 192, 192)]
REFERENCE_BLOCKS = [B1, B2, B3, B3, B3]
REFERENCE_OUTPUTS = [(96, 16, 16), (192, 8, 8), (192, 8, 8), (192, 8, 8), (192, 8, 8)]


def reference_parameter_count(blocks: int, outputs: int, in_channels: int = 3) -> int:
    """Convs without bias (k·k·cin·cout), BatchNorm weight+bias per channel, and the
    head Linear(192 → outputs) with bias."""
    total = 0
    for index, layers in enumerate(REFERENCE_BLOCKS[:blocks]):
        for layer, (k, cin, cout) in enumerate(layers):
            if index == 0 and layer == 0:
                cin = in_channels
            total += k * k * cin * cout + 2 * cout
    return total + 192 * outputs + outputs


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_rotnet_4_blocks_has_the_reference_parameter_count():
    model = NINClassifier(4, 4, in_channels=3, width=1.0)
    expected = reference_parameter_count(4, 4)
    assert expected == 1_411_140  # the table's arithmetic, spelled out once as a sanity check
    assert count(model) == expected


@pytest.mark.parametrize("blocks", [3, 5])
def test_other_depths_and_the_supervised_nin_match_the_reference_count(blocks):
    assert count(NINClassifier(blocks, 4)) == reference_parameter_count(blocks, 4)
    # The supervised baseline: the 3-block network with a 10-way head.
    assert count(NINClassifier(3, 10)) == reference_parameter_count(3, 10)


def test_every_conv_is_stride_1_same_padding_no_bias_then_bn_relu():
    backbone = NINBackbone(5)
    for block, reference in zip(backbone.blocks, REFERENCE_BLOCKS):
        convs = [m for m in block if isinstance(m, nn.Conv2d)]
        assert [(c.kernel_size[0], c.in_channels, c.out_channels) for c in convs] == reference
        for conv in convs:
            assert conv.bias is None
            assert conv.stride == (1, 1)
            assert conv.padding == ((conv.kernel_size[0] - 1) // 2,) * 2
        layers = list(block)
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Conv2d):
                assert isinstance(layers[i + 1], nn.BatchNorm2d)
                assert isinstance(layers[i + 2], nn.ReLU)
    pools = [[type(m) for m in block if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
             for block in backbone.blocks]
    assert pools == [[nn.MaxPool2d], [nn.AvgPool2d], [], [], []]


@pytest.mark.parametrize("blocks", [3, 4, 5])
def test_block_output_shapes_follow_the_table(blocks):
    backbone = NINBackbone(blocks).eval()
    with torch.no_grad():
        outputs = backbone.block_outputs(torch.randn(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outputs] == [(2, *s) for s in REFERENCE_OUTPUTS[:blocks]]
    assert backbone.out_channels == [s[0] for s in REFERENCE_OUTPUTS[:blocks]]
    for block in range(1, blocks + 1):
        assert block_output_shape(backbone, block, 3) == REFERENCE_OUTPUTS[block - 1]


def test_forward_upto_matches_the_block_outputs():
    backbone = NINBackbone(4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outputs = backbone.block_outputs(x)
        for block in range(1, 5):
            assert torch.equal(backbone(x, upto=block), outputs[block - 1])
        assert torch.equal(backbone(x), outputs[-1])


def test_rotnet_head_pools_globally_then_linear_with_bias():
    model = NINClassifier(4, 4).eval()
    assert isinstance(model.head.fc, nn.Linear)
    assert (model.head.fc.in_features, model.head.fc.out_features) == (192, 4)
    assert model.head.fc.bias is not None
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = model.backbone(x)
        expected = model.head.fc(features.mean(dim=(2, 3)))
        assert torch.allclose(model(x), expected)
    assert model(x).shape == (3, 4)


def test_one_channel_input_works():
    model = NINClassifier(4, 4, in_channels=1).eval()
    assert model.backbone.blocks[0][0].weight.shape == (192, 1, 5, 5)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    assert count(model) == reference_parameter_count(4, 4, in_channels=1)
    # 3-channel images do not fit a 1-channel network.
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("width", [0.5, 0.25, 0.125])
def test_width_multiplier_scales_every_channel_count(width):
    backbone = NINBackbone(4, width=width).eval()
    for block, reference in zip(backbone.blocks, REFERENCE_BLOCKS):
        convs = [m for m in block if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == [round(cout * width) for _, _, cout in reference]
        bns = [m for m in block if isinstance(m, nn.BatchNorm2d)]
        assert [b.num_features for b in bns] == [c.out_channels for c in convs]
    assert backbone.blocks[0][0].in_channels == 3  # the input is not scaled
    with torch.no_grad():
        outputs = backbone.block_outputs(torch.randn(2, 3, 32, 32))
    expected = [(round(c * width), h, w) for c, h, w in REFERENCE_OUTPUTS[:4]]
    assert [tuple(o.shape[1:]) for o in outputs] == expected
    assert count(backbone) < count(NINBackbone(4))


def test_truncated_shares_parameters_with_the_backbone():
    backbone = NINBackbone(4).eval()
    trunk = backbone.truncated(2)
    assert len(trunk) == 2
    backbone_params = {id(p) for p in backbone.parameters()}
    trunk_params = list(trunk.parameters())
    assert trunk_params and all(id(p) in backbone_params for p in trunk_params)
    assert count(trunk) == count(nn.Sequential(backbone.blocks[0], backbone.blocks[1]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(trunk(x), backbone(x, upto=2))
        # A change through the trunk is a change of the backbone (no copy).
        trunk[0][0].weight.mul_(2.0)
        assert torch.equal(backbone.blocks[0][0].weight, trunk[0][0].weight)
        assert torch.equal(trunk(x), backbone(x, upto=2))


@pytest.mark.parametrize("bad", [0, 5, 6, -1])
def test_a_block_the_backbone_does_not_have_is_a_rotnet_error(bad):
    backbone = NINBackbone(4)
    with pytest.raises(RotnetError, match="block"):
        backbone.truncated(bad)
    with pytest.raises(RotnetError):
        block_output_shape(backbone, bad, 3)


def test_backbone_depth_outside_1_to_5_is_a_rotnet_error():
    with pytest.raises(RotnetError):
        NINBackbone(6)
    with pytest.raises(RotnetError):
        NINBackbone(0)


def test_nonlinear_probe_layers_and_shapes():
    features = 192 * 8 * 8
    probe = nonlinear_probe(features, 10).eval()
    linears = [m for m in probe if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(features, 200), (200, 200),
                                                                  (200, 10)]
    assert [l.bias is None for l in linears] == [True, True, False]
    assert [m.num_features for m in probe if isinstance(m, nn.BatchNorm1d)] == [200, 200]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in probe.modules())
    assert count(probe) == features * 200 + 2 * 200 + 200 * 200 + 2 * 200 + 200 * 10 + 10
    with torch.no_grad():
        assert probe(torch.randn(3, 192, 8, 8)).shape == (3, 10)  # flattens, no pooling
    # on block 1 of the reference network
    probe1 = nonlinear_probe(96 * 16 * 16, 10, hidden=50).eval()
    with torch.no_grad():
        assert probe1(torch.randn(2, 96, 16, 16)).shape == (2, 10)


def test_conv_probe_is_a_fresh_nin_block_3_then_pool_and_linear():
    probe = conv_probe(192, 10).eval()
    convs = [m for m in probe.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size[0], c.in_channels, c.out_channels) for c in convs] == B3
    assert all(c.bias is None for c in convs)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in probe.modules())
    expected = sum(k * k * cin * cout + 2 * cout for k, cin, cout in B3) + 192 * 10 + 10
    assert count(probe) == expected
    with torch.no_grad():
        assert probe(torch.randn(2, 192, 8, 8)).shape == (2, 10)
    # Together with two RotNet blocks it is a 3-block NIN with a 10-way head.
    trunk = NINBackbone(4).truncated(2)
    assert count(trunk) + count(probe) == reference_parameter_count(3, 10)


def test_conv_probe_follows_the_width_of_its_input():
    probe = conv_probe(24, 10, width=0.125).eval()
    convs = [m for m in probe.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(24, 24), (24, 24), (24, 24)]
    with torch.no_grad():
        assert probe(torch.randn(2, 24, 8, 8)).shape == (2, 10)


# ---- initialisation: the authors' classifier heads, PyTorch's default backbone ---------


def _std_close(weight: torch.Tensor, want: float, tolerance: float = 0.05) -> bool:
    return abs(weight.float().std().item() / want - 1) < tolerance and abs(weight.mean().item()) < want / 20


def test_probe_heads_are_he_normal_over_fan_out_and_linear_n0_2_over_fan_out():
    torch.manual_seed(0)
    head = conv_probe(192, 10)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:  # He-normal, fan_out = k·k·out (the authors' classifiers)
        k, out = conv.kernel_size[0], conv.out_channels
        assert _std_close(conv.weight, (2 / (k * k * out)) ** 0.5), conv
    linears = [m for m in nonlinear_probe(192 * 8 * 8, 10).modules() if isinstance(m, nn.Linear)]
    linears += [m for m in head.modules() if isinstance(m, nn.Linear)]
    for linear in linears:  # N(0, 2 / fan_out): std √(2 / out_features), bias 0
        if linear.weight.numel() >= 1000:  # enough weights for the statistic
            assert _std_close(linear.weight, (2 / linear.out_features) ** 0.5), linear
        assert linear.bias is None or not linear.bias.any()
    last = linears[-1]  # 192 → 10: too few weights for a tight bound, but far from default
    assert last.weight.std().item() > 0.25  # PyTorch's default would be ≤ 1/√192 ≈ 0.07


def test_the_backbone_keeps_pytorchs_default_init():
    torch.manual_seed(0)
    conv = NINBackbone(3).blocks[2][0]  # 3×3, 192 → 192: kaiming_uniform(a=√5) by default
    fan_in = conv.in_channels * 9
    assert _std_close(conv.weight, (1 / (3 * fan_in)) ** 0.5)
