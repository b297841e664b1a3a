from __future__ import annotations

import pytest
import torch

from skipnas.genome import NAMED_TOPOLOGIES, Genome
from skipnas.models import build_model
from skipnas.models.reference import ClassicUNet


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(NAMED_TOPOLOGIES))
@pytest.mark.parametrize("size", [(64, 64), (67, 93)])
def test_forward_and_backward_for_every_named_topology(name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(Genome.named(name, base_width=4), in_channels=1, classes=1)
    x = torch.randn(2, 1, *size)
    logits = model(x)
    assert logits.shape == (2, 1, *size)
    logits.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_fusion_modes_and_multiclass_rgb(fusion: str) -> None:
    model = build_model(Genome.named("semi-dense", base_width=4, fusion=fusion), in_channels=3, classes=4)
    assert model(torch.randn(1, 3, 35, 41)).shape == (1, 4, 35, 41)


def test_other_depths_and_tiny_inputs() -> None:
    for depth in (1, 2, 5):
        model = build_model(Genome.named("dense", depth=depth, base_width=2))
        # a 1x1 bottleneck: batch 2 so BatchNorm has more than one value per channel
        assert model(torch.randn(2, 1, 2**depth + 3, 2**depth)).shape == (2, 1, 2**depth + 3, 2**depth)


def _encoder_grads_through_skips_only(genome: Genome) -> list[bool]:
    """For each encoder level i: does the loss reach level i's weights when the deeper path is cut?"""
    reached = []
    for level in range(genome.depth):
        model = build_model(genome)
        deeper = model.encoder.stages[level + 1] if level + 1 < genome.depth else model.encoder.bottleneck
        deeper.register_forward_pre_hook(lambda _module, inputs: tuple(t.detach() for t in inputs))
        model(torch.randn(1, 1, 32, 32)).square().mean().backward()
        grad = model.encoder.stages[level].conv[0].weight.grad
        reached.append(grad is not None and bool(grad.abs().sum() > 0))
    return reached


@pytest.mark.parametrize("name", list(NAMED_TOPOLOGIES))
def test_gradients_reach_every_encoder_level_a_skip_uses(name: str) -> None:
    genome = Genome.named(name, base_width=2)
    expected = [any(row) for row in genome.skips]
    assert _encoder_grads_through_skips_only(genome) == expected


def test_a_single_custom_link_carries_gradient() -> None:
    genome = Genome([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], base_width=2)
    assert _encoder_grads_through_skips_only(genome) == [False, False, True, False]


def test_standard_genome_at_classic_widths_is_the_reference_unet() -> None:
    """The standard genome at width 64 has exactly the layers of the reference bilinear U-Net.

    Reference (milesial/Pytorch-UNet, bilinear): 17,263,042 parameters for 3 channels in and 2 classes
    out without conv biases (its current release); the older releases' biased convolutions add one bias
    per conv output channel, 4,416 more. skipnas drops those biases because BatchNorm follows each conv.
    """
    ours = build_model(Genome.named("standard", base_width=64), in_channels=3, classes=2)
    reference = ClassicUNet(in_channels=3, classes=2, width=64, conv_bias=False)
    biased = ClassicUNet(in_channels=3, classes=2, width=64, conv_bias=True)
    assert _params(ours) == _params(reference) == 17_263_042
    conv_out_channels = sum(m.out_channels for m in biased.modules() if isinstance(m, torch.nn.Conv2d)) - 2
    assert _params(biased) - _params(ours) == conv_out_channels == 4_416
    shapes = sorted(tuple(p.shape) for p in ours.parameters())
    assert shapes == sorted(tuple(p.shape) for p in reference.parameters())


def test_reference_unet_runs_on_odd_sizes() -> None:
    assert ClassicUNet(width=4)(torch.randn(1, 1, 67, 93)).shape == (1, 1, 67, 93)


@pytest.mark.parametrize("name", ["standard", "semi-dense", "reverse", "none"])
def test_an_auxiliary_head_adds_one_channel_after_the_classes_for_any_genome(name: str) -> None:
    torch.manual_seed(0)
    genome = Genome.named(name, base_width=4)
    model = build_model(genome, in_channels=1, classes=2, auxiliary="distance")
    assert model.out_channels == 3
    model.eval()
    x = torch.randn(2, 1, 40, 36)
    logits = model(x)
    assert logits.shape == (2, 3, 40, 36)
    # class logits first, then the auxiliary head's own output on the same decoder features
    decoded = model.decoder(*model.encoder(x))
    assert torch.equal(logits[:, :2], model.head(decoded))
    assert torch.equal(logits[:, 2:], model.auxiliary_head(decoded))


def test_gradients_reach_the_auxiliary_head_only_through_its_channel() -> None:
    model = build_model(Genome.named("semi-dense", base_width=4), auxiliary="distance")
    logits = model(torch.randn(2, 1, 32, 32))
    logits[:, -1].square().mean().backward()
    head = model.auxiliary_head
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0
    assert model.head.weight.grad is None or not model.head.weight.grad.any()  # the class head does not feed it
    assert model.encoder.stages[0].conv[0].weight.grad.abs().sum() > 0  # the shared body learns from it


def test_without_an_auxiliary_head_the_model_is_unchanged() -> None:
    genome = Genome.named("reverse", base_width=4)
    torch.manual_seed(0)
    plain = build_model(genome)
    torch.manual_seed(0)
    with_head = build_model(genome, auxiliary="distance")
    plain_names = list(plain.state_dict())
    assert plain.auxiliary_head is None and plain.out_channels == 1
    assert [k for k in with_head.state_dict() if not k.startswith("auxiliary_head.")] == plain_names
    assert sorted(set(with_head.state_dict()) - set(plain_names)) == ["auxiliary_head.bias", "auxiliary_head.weight"]
    # a head-less model's weights are the class part of a model with the head: same class logits
    with_head.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 1, 32, 32)
    plain.eval(), with_head.eval()
    assert torch.equal(plain(x), with_head(x)[:, :1])


def test_an_unknown_auxiliary_target_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown auxiliary target 'edges'; known: distance, centres"):
        build_model(Genome.named("standard", base_width=4), auxiliary="edges")
