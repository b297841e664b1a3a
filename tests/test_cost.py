from __future__ import annotations

import pytest
import torch

from skipnas.cost import CUDA_WORKSPACE_BYTES, CostConfig, count_params, estimate_cost, measure_peak_cuda
from skipnas.genome import Genome
from skipnas.models import build_model

SMALL = CostConfig(tile=32, batch=2, val_tile=32, val_batch=2)


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


def test_peak_memory_holds_weights_adam_state_the_best_weights_and_the_step(costs) -> None:
    cost = costs["standard"]
    breakdown = cost.memory_breakdown
    weights = cost.params * 4
    tensors = len(list(build_model(Genome.named("standard", base_width=4)).parameters()))
    # each tensor rounded up to the CUDA allocator's 512-byte blocks
    assert weights <= breakdown["parameter"] <= weights + 512 * tensors
    assert breakdown["optstate"] >= 2 * weights  # Adam's two moments
    assert breakdown["best_weights"] >= breakdown["parameter"]  # the kept copy: weights and buffers
    assert breakdown["step"] > weights  # gradients alone are as large as the weights
    held = sum(breakdown[kind] for kind in ("parameter", "buffer", "optstate", "best_weights"))
    assert cost.predicted_train_step_bytes == held + breakdown["step"]
    assert cost.predicted_validation_bytes == held + breakdown["validation"]
    assert breakdown["workspace"] == CUDA_WORKSPACE_BYTES  # the default budget is a GPU's
    assert cost.predicted_peak_bytes == max(cost.predicted_train_step_bytes, cost.predicted_validation_bytes) + CUDA_WORKSPACE_BYTES


def test_validation_holds_the_last_gradients_and_grows_with_its_tiles() -> None:
    genome = Genome.named("standard", base_width=4)
    small = estimate_cost(genome, CostConfig(tile=32, batch=2, val_tile=64, val_batch=1))
    batched = estimate_cost(genome, CostConfig(tile=32, batch=2, val_tile=64, val_batch=8))
    large = estimate_cost(genome, CostConfig(tile=32, batch=2, val_tile=128, val_batch=1))
    # the gradients of the step before (as large as the weights) are still alive while validating
    assert small.memory_breakdown["validation"] > small.memory_breakdown["parameter"]
    tiles = {
        name: cost.memory_breakdown["validation"] - small.memory_breakdown["parameter"]
        for name, cost in (("small", small), ("batched", batched), ("large", large))
    }
    assert 5 <= tiles["batched"] / tiles["small"] <= 8.5  # activations scale with the batch of tiles
    assert 3 <= tiles["large"] / tiles["small"] <= 4.5  # and with the tile's area
    assert small.predicted_train_step_bytes == batched.predicted_train_step_bytes  # training is untouched


def test_validation_at_the_default_512_px_tiles_outweighs_a_training_step() -> None:
    cost = estimate_cost(Genome.named("standard", base_width=16))
    assert cost.predicted_validation_bytes > 5 * cost.predicted_train_step_bytes
    assert cost.predicted_peak_bytes == cost.predicted_validation_bytes + CUDA_WORKSPACE_BYTES


def test_cuda_adds_the_foreach_temporaries_and_workspaces_other_devices_do_not() -> None:
    genome = Genome.named("standard", base_width=8)
    cuda = estimate_cost(genome, CostConfig(tile=32, batch=1, val_tile=32, val_batch=1))
    cpu = estimate_cost(genome, CostConfig(tile=32, batch=1, val_tile=32, val_batch=1, device_type="cpu"))
    weights = cuda.memory_breakdown["parameter"]
    sizes = [p.numel() * 4 for p in build_model(genome).parameters()]
    # Adam's multi-tensor path holds a temporary per parameter at once (the square roots of the
    # second moments), the single-tensor path at most two at a time, of one tensor
    extra = cuda.predicted_train_step_bytes - cpu.predicted_train_step_bytes
    assert weights - 2 * max(sizes) - 512 * len(sizes) <= extra <= weights
    assert cpu.memory_breakdown["workspace"] == 0
    assert cpu.predicted_peak_bytes == max(cpu.predicted_train_step_bytes, cpu.predicted_validation_bytes)


def test_the_configured_weight_decay_is_costed() -> None:
    # wide weights on small tiles: the optimiser's step, not the backward pass, is the peak
    genome = Genome.named("standard", base_width=16)
    plain = estimate_cost(genome, CostConfig(tile=32, batch=1, val_tile=16, val_batch=1, optimizer="sgd"))
    decayed = estimate_cost(genome, CostConfig(tile=32, batch=1, val_tile=16, val_batch=1, optimizer="sgd", weight_decay=1e-4))
    # the foreach path adds weight_decay * param to a copy of the gradients
    extra = decayed.predicted_train_step_bytes - plain.predicted_train_step_bytes
    assert 0.5 * plain.memory_breakdown["parameter"] <= extra <= plain.memory_breakdown["parameter"]
    with pytest.raises(ValueError, match="weight_decay must be 0 or more"):
        CostConfig(weight_decay=-1e-4)


def test_peak_memory_grows_with_batch_and_shrinks_with_bf16() -> None:
    genome = Genome.named("standard", base_width=4)
    one = estimate_cost(genome, CostConfig(tile=32, batch=1))
    four = estimate_cost(genome, CostConfig(tile=32, batch=4))
    eight = estimate_cost(genome, CostConfig(tile=32, batch=8))
    bf16 = estimate_cost(genome, CostConfig(tile=32, batch=4, dtype="bfloat16"))
    assert one.predicted_train_step_bytes < four.predicted_train_step_bytes < eight.predicted_train_step_bytes
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


def test_channels_last_holds_the_same_tensors_in_another_layout() -> None:
    genome = Genome.named("reverse", base_width=4)
    contiguous = estimate_cost(genome, SMALL)
    last = estimate_cost(genome, CostConfig(tile=32, batch=2, val_tile=32, val_batch=2, channels_last=True))
    assert last.memory_breakdown["parameter"] == contiguous.memory_breakdown["parameter"]
    assert last.memory_breakdown["optstate"] == contiguous.memory_breakdown["optstate"]
    # the same activations; at most the layout conversions of the inputs on top
    assert contiguous.predicted_train_step_bytes <= last.predicted_train_step_bytes <= 1.2 * contiguous.predicted_train_step_bytes


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="dtype"):
        CostConfig(dtype="int8")
    with pytest.raises(ValueError, match="optimizer"):
        CostConfig(optimizer="lion")
    with pytest.raises(ValueError, match="val_batch must be at least 1"):
        CostConfig(val_batch=0)
    with pytest.raises(ValueError, match="device_type"):
        CostConfig(device_type="tpu")
    with pytest.raises(ValueError, match="BatchNorm"):
        estimate_cost(Genome.named("standard", base_width=4), CostConfig(tile=16, batch=1))
    with pytest.raises(ValueError, match="val_tile 8 px is below 2\\*\\*depth = 16 px"):
        estimate_cost(Genome.named("standard", base_width=4), CostConfig(val_tile=8))


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
    from skipnas.train.config import TrainConfig
    from skipnas.train.losses import LossConfig
    from skipnas.train.trainer import training_loss

    genome = Genome.named("standard", base_width=4)
    loss_fn = training_loss(TrainConfig(auxiliary="distance", loss=LossConfig(particle_weight=1.0)))
    config = CostConfig(tile=32, batch=2, auxiliary="distance", instance_channel=True)
    assert config.target_channels == config.out_channels + 1 == 3
    assert estimate_cost(genome, config, loss_fn=loss_fn).predicted_peak_bytes > 0
    with pytest.raises(ValueError, match="plus one of instance IDs"):
        estimate_cost(genome, CostConfig(tile=32, batch=2, auxiliary="distance"), loss_fn=loss_fn)


def test_measure_peak_cuda_needs_a_cuda_device() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the gpu tests measure it")
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        measure_peak_cuda(Genome.named("standard", base_width=4), SMALL)


@pytest.mark.gpu
def test_measured_cuda_peaks_stay_under_their_predictions() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    genome = Genome.named("standard", base_width=8)
    config = CostConfig(tile=64, batch=4, val_tile=128, val_batch=2)
    cost = estimate_cost(genome, config)
    measured = measure_peak_cuda(genome, config)
    # each stage against its own prediction; cuDNN's workspaces ride on the allowance
    assert 0 < measured.train_step_bytes <= cost.predicted_train_step_bytes + CUDA_WORKSPACE_BYTES
    assert 0 < measured.validation_bytes <= cost.predicted_validation_bytes + CUDA_WORKSPACE_BYTES
    assert max(measured.train_step_bytes, measured.validation_bytes) <= cost.predicted_peak_bytes
