"""Every registered modulator: shapes, gradients, and DSM's no-pooling property."""

import pytest
import torch
import torch.fx

import dsm
from dsm.modulators import DecomposedSpatialModulator

MODULATORS = dsm.list_modulators()


def test_registry_has_the_compared_modules():
    assert set(MODULATORS) >= {"none", "dsm", "se", "cbam", "bam", "eca", "ca", "simam", "gam", "lka"}


@pytest.mark.parametrize("name", MODULATORS)
@pytest.mark.parametrize("shape", [(2, 16, 7, 7), (1, 96, 28, 28), (3, 48, 12, 20)])
def test_shape_preserved(name, shape):
    m = dsm.create_modulator(name, shape[1]).eval()
    assert m(torch.randn(shape)).shape == shape


@pytest.mark.parametrize("name", [n for n in MODULATORS if n not in ("none", "simam")])
def test_gradient_reaches_modulator_parameters(name):
    m = dsm.create_modulator(name, 32).train()
    m(torch.randn(2, 32, 14, 14)).square().mean().backward()
    grads = [p.grad for p in m.parameters()]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_unknown_modulator_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown modulator 'nope'"):
        dsm.create_modulator("nope", 8)


def test_dsm_gate_is_single_channel_and_modulates():
    m = DecomposedSpatialModulator(64).eval()
    x = torch.randn(2, 64, 14, 14)
    gate = m.gate_map(x)
    assert gate.shape == (2, 1, 14, 14) and (gate >= 0).all() and (gate <= 1).all()
    torch.testing.assert_close(m(x), x * gate)


def test_dsm_gradient_flows_through_gate():
    m = DecomposedSpatialModulator(32, dropout=0.0).train()
    x = torch.randn(2, 32, 10, 10, requires_grad=True)
    m(x).sum().backward()
    assert m.score.weight.grad.abs().sum() > 0
    assert m.context.conv[0].weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_dsm_hidden_width_follows_reduction():
    m = DecomposedSpatialModulator(96, reduction=8, kernel_size=7)
    assert m.context.conv[0].weight.shape == (12, 96, 7, 7)
    assert m.score.weight.shape == (1, 12, 3, 3) and m.score.bias is None


@pytest.mark.parametrize(
    "opts",
    [
        {"kernel_size": 3},
        {"kernel_size": 11},
        {"reduction": 4},
        {"depthwise": True},
        {"dropout": 0.0},
        {"gate": "hard_sigmoid"},
        {"rep": False},
        {"output_dropout": False},
    ],
)
def test_dsm_ablation_options(opts):
    m = DecomposedSpatialModulator(32, **opts).eval()
    x = torch.randn(1, 32, 9, 9)
    y = m(x)
    assert y.shape == x.shape
    assert repr(m) != repr(DecomposedSpatialModulator(32))  # the option changed the module it builds
    torch.testing.assert_close(dsm.reparameterize(m)(x), y, atol=1e-5, rtol=1e-4)


def test_dsm_bad_gate_rejected():
    with pytest.raises(ValueError, match="gate"):
        DecomposedSpatialModulator(8, gate="tanh")


POOLING = ("pool", "mean", "amax", "adaptive")


def _traced_ops(module):
    graph = torch.fx.symbolic_trace(module).graph
    names = []
    for node in graph.nodes:
        if node.op == "call_module":
            names.append(type(module.get_submodule(node.target)).__name__.lower())
        elif node.op in ("call_function", "call_method"):
            names.append(getattr(node.target, "__name__", str(node.target)).lower())
    return names


@pytest.mark.parametrize("opts", [{}, {"depthwise": True}])
def test_dsm_has_no_pooling_op(opts):
    ops = _traced_ops(DecomposedSpatialModulator(32, **opts))
    assert "conv2d" in ops and "sigmoid" in ops
    assert not [op for op in ops if any(p in op for p in POOLING)], ops


def test_pooling_detector_detects_pooling():
    """The no-pooling check above must be able to fail: SE and CBAM pool."""
    for name in ("se", "cbam"):
        ops = _traced_ops(dsm.create_modulator(name, 32))
        assert [op for op in ops if any(p in op for p in POOLING)], (name, ops)


def test_even_kernel_is_refused_when_built():
    """An even kernel cannot keep the H x W grid with centred padding: say so at construction, not at the
    first forward pass with a shape mismatch."""
    with pytest.raises(ValueError, match="kernel_size must be odd, got 6"):
        dsm.create_modulator("dsm", 16, kernel_size=6)
