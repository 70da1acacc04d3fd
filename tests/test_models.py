"""The paper's network and timm backbones: size, shapes, fusion."""

import pytest
import torch

import dsm
from dsm.bench import count_macs, count_params
from dsm.layers import RepConv


def _randomize_bn(model: torch.nn.Module) -> None:
    """Give BN non-trivial statistics so that fusion is actually exercised."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def test_dsm_net_matches_paper_size():
    model = dsm.create_model("dsm_net", modulator="dsm", num_classes=7)
    params = count_params(model)
    assert abs(params - 1.31e6) / 1.31e6 <= 0.02, params
    macs = count_macs(dsm.reparameterize(model), (1, 3, 112, 112))
    assert 0.60e9 <= macs <= 0.70e9, macs


def test_modulator_slot_is_after_stage_2():
    model = dsm.create_model("dsm_net", modulator="cbam")
    assert type(model.stages[1][-1]).__name__ == "CBAM"
    assert not any(type(m).__name__ == "CBAM" for m in model.stages[2].modules())
    plain = dsm.create_model("dsm_net", modulator="none")
    assert count_params(plain) < count_params(model)


@pytest.mark.parametrize("in_chans,size", [(3, 112), (1, 48), (1, 64), (3, 100)])
def test_dsm_net_input_channels_and_sizes(in_chans, size):
    model = dsm.create_model("dsm_net", in_chans=in_chans, num_classes=8).eval()
    assert model(torch.randn(2, in_chans, size, size)).shape == (2, 8)


@pytest.mark.parametrize("modulator", ["dsm", "none", "cbam", "lka"])
@pytest.mark.parametrize("in_chans,size", [(3, 112), (1, 48)])
def test_reparameterize_preserves_logits(modulator, in_chans, size):
    model = dsm.create_model("dsm_net", modulator=modulator, in_chans=in_chans).eval()
    _randomize_bn(model)
    x = torch.randn(2, in_chans, size, size)
    with torch.no_grad():
        expected = model(x)
        fused = dsm.reparameterize(model)
        got = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules() if m is not None) or modulator in (
        "cbam",
        "lka",
    )
    assert all(m.fused is not None for m in fused.modules() if isinstance(m, RepConv))
    assert count_params(fused) < count_params(model)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_reparameterize_copies_unless_inplace():
    model = dsm.create_model("dsm_net")
    fused = dsm.reparameterize(model)
    assert fused is not model and model.stem[0].fused is None
    assert dsm.reparameterize(model, inplace=True) is model and model.stem[0].fused is not None


@pytest.mark.parametrize("groups,cin,cout,stride", [(1, 8, 8, 1), (1, 8, 16, 2), (8, 8, 8, 1), (1, 4, 4, 2)])
def test_repconv_fusion_exact(groups, cin, cout, stride):
    layer = RepConv(cin, cout, 3, stride=stride, groups=groups).eval()
    _randomize_bn(layer)
    x = torch.randn(2, cin, 11, 11)
    expected = layer(x)
    layer.fuse()
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_timm_backbone_gets_modulator_after_stage():
    model = dsm.create_model("timm:resnet18", modulator="dsm", modulator_stages=[2], num_classes=7, in_chans=1)
    assert isinstance(model.layer2, torch.nn.Sequential)
    assert type(model.layer2[1]).__name__ == "DecomposedSpatialModulator"
    assert model.layer2[1].context.conv[0].in_channels == 128
    assert model.eval()(torch.randn(1, 1, 48, 48)).shape == (1, 7)
    plain = dsm.create_model("timm:resnet18", num_classes=7)
    assert count_params(model) > count_params(plain)


def test_timm_bad_stage_is_clear():
    with pytest.raises(ValueError, match="stage 9 out of range"):
        dsm.create_model("timm:resnet18", modulator="dsm", modulator_stages=[9])


def test_unknown_model_is_clear():
    with pytest.raises(ValueError, match="unknown model"):
        dsm.create_model("nope")


def test_reparameterize_fuses_timm_blocks_too():
    """timm's RepVGG blocks (``reparameterize()``) and a block whose ``fuse()`` returns its replacement are
    fused along with the DSM branch: no BatchNorm is left, the logits stay."""

    class ReturnsFused(torch.nn.Module):  # timm's LeViT/EfficientViT ConvNorm convention
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 1, bias=False), torch.nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x))

        def fuse(self) -> torch.nn.Module:
            return torch.nn.utils.fusion.fuse_conv_bn_eval(self.conv, self.bn)

    torch.manual_seed(0)
    model = dsm.create_model("timm:repvgg_a0", modulator="dsm", modulator_stages=[2], num_classes=7)
    model = torch.nn.Sequential(ReturnsFused(), model).eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, fused = model(x), dsm.reparameterize(model)
        got = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert count_params(fused) < count_params(model)
    torch.testing.assert_close(got, expected, atol=1e-3, rtol=1e-3)  # logits near 30: float32 fusion error


@pytest.mark.parametrize("stages", [(0,), (4,), (2, 5)])
def test_modulator_after_out_of_range_is_refused(stages):
    with pytest.raises(ValueError, match=r"modulator_after: stage \d out of range 1\.\.3"):
        dsm.create_model("dsm_net", modulator="dsm", modulator_after=stages)
