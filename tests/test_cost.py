from __future__ import annotations

import pytest

from skipnas.cost import CostConfig, count_params, estimate_cost
from skipnas.genome import Genome
from skipnas.models import build_model

SMALL = CostConfig(tile=32, batch=2)


@pytest.fixture(scope="module")
def costs() -> dict[str, object]:
    return {name: estimate_cost(Genome.named(name, base_width=4), SMALL) for name in ("none", "standard", "semi-dense", "dense")}


def test_param_ordering_at_the_same_width(costs) -> None:
    params = [costs[n].params for n in ("none", "standard", "semi-dense", "dense")]
    assert params == sorted(params) and len(set(params)) == 4


def test_params_match_the_built_model(costs) -> None:
    assert costs["standard"].params == count_params(build_model(Genome.named("standard", base_width=4)))


def test_training_flops_are_about_three_forwards(costs) -> None:
    for cost in costs.values():
        assert 2.0 <= cost.train_step_flops / cost.forward_flops <= 3.5


def test_flops_grow_with_links_and_tile(costs) -> None:
    assert costs["none"].forward_flops < costs["standard"].forward_flops < costs["dense"].forward_flops
    bigger = estimate_cost(Genome.named("standard", base_width=4), CostConfig(tile=64, batch=2))
    assert bigger.forward_flops == pytest.approx(4 * costs["standard"].forward_flops, rel=0.01)


def test_peak_memory_holds_weights_adam_state_and_the_step(costs) -> None:
    cost = costs["standard"]
    weights = cost.params * 4
    tensors = len(list(build_model(Genome.named("standard", base_width=4)).parameters()))
    # each tensor rounded up to the CUDA allocator's 512-byte blocks
    assert weights <= cost.memory_breakdown["parameter"] <= weights + 512 * tensors
    assert cost.memory_breakdown["optstate"] >= 2 * weights  # Adam's two moments
    assert cost.memory_breakdown["step"] > weights  # gradients alone are as large as the weights
    assert cost.predicted_peak_bytes == sum(cost.memory_breakdown.values())


def test_peak_memory_grows_with_batch_and_shrinks_with_bf16() -> None:
    genome = Genome.named("standard", base_width=4)
    one = estimate_cost(genome, CostConfig(tile=32, batch=1))
    four = estimate_cost(genome, CostConfig(tile=32, batch=4))
    eight = estimate_cost(genome, CostConfig(tile=32, batch=8))
    bf16 = estimate_cost(genome, CostConfig(tile=32, batch=4, dtype="bfloat16"))
    assert one.predicted_peak_bytes < four.predicted_peak_bytes < eight.predicted_peak_bytes
    # once activations dominate the step they scale with the batch
    assert 1.7 <= eight.memory_breakdown["step"] / four.memory_breakdown["step"] <= 2.1
    assert bf16.memory_breakdown["step"] < 0.8 * four.memory_breakdown["step"]


def test_sgd_needs_less_state_than_adam() -> None:
    genome = Genome.named("standard", base_width=4)
    adam = estimate_cost(genome, CostConfig(tile=32, batch=1))
    sgd = estimate_cost(genome, CostConfig(tile=32, batch=1, optimizer="sgd"))
    # SGD keeps one momentum buffer per weight, Adam two moments (and a step counter)
    assert sgd.memory_breakdown["optstate"] < 0.6 * adam.memory_breakdown["optstate"]
    assert sgd.memory_breakdown["optstate"] >= sgd.params * 4


def test_channels_last_estimate_runs() -> None:
    cost = estimate_cost(Genome.named("reverse", base_width=4), CostConfig(tile=32, batch=2, channels_last=True))
    assert cost.predicted_peak_bytes > 0


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="dtype"):
        CostConfig(dtype="int8")
    with pytest.raises(ValueError, match="optimizer"):
        CostConfig(optimizer="lion")


def test_a_config_with_an_auxiliary_head_costs_the_model_with_the_head(costs) -> None:
    from skipnas.train.losses import AuxiliaryLoss, LossConfig, build_loss

    genome = Genome.named("standard", base_width=4)
    config = CostConfig(tile=32, batch=2, auxiliary="distance")
    cost = estimate_cost(genome, config, loss_fn=AuxiliaryLoss(build_loss(LossConfig())))
    assert cost.params == count_params(build_model(genome, auxiliary="distance")) == costs["standard"].params + 4 + 1
    assert cost.predicted_peak_bytes > costs["standard"].predicted_peak_bytes
    assert cost.train_step_flops > costs["standard"].train_step_flops
    with pytest.raises(ValueError, match="unknown auxiliary target 'edges'; known: distance, centres"):
        CostConfig(auxiliary="edges")


def test_a_loss_with_a_particle_term_is_costed_with_instance_ids_in_its_targets() -> None:
    from skipnas.train.trainer import TrainConfig, training_loss
    from skipnas.train.losses import LossConfig

    genome = Genome.named("standard", base_width=4)
    loss_fn = training_loss(TrainConfig(auxiliary="distance", loss=LossConfig(particle_weight=1.0)))
    config = CostConfig(tile=32, batch=2, auxiliary="distance", instance_channel=True)
    assert config.target_channels == config.out_channels + 1 == 3
    assert estimate_cost(genome, config, loss_fn=loss_fn).predicted_peak_bytes > 0
    with pytest.raises(ValueError, match="plus one of instance IDs"):
        estimate_cost(genome, CostConfig(tile=32, batch=2, auxiliary="distance"), loss_fn=loss_fn)
