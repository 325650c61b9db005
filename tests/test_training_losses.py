"""GAN losses and the discriminator against closed-form answers."""
import math

import pytest
import torch

from gramcast.training.losses import discriminator_loss, generator_loss, pose_loss, r1_penalty
from gramcast.training.networks.discriminator import PoseDiscriminator


def test_logistic_losses_at_known_points():
    zero = torch.zeros(5)
    assert math.isclose(generator_loss(zero).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(discriminator_loss(zero, zero).item(), 2 * math.log(2), rel_tol=1e-6)
    # A confident, correct discriminator has a loss near zero; the generator's is then large.
    assert discriminator_loss(torch.full((3,), 20.0), torch.full((3,), -20.0)).item() < 1e-6
    assert generator_loss(torch.full((3,), -20.0)).item() > 19.0


def test_r1_of_a_linear_discriminator_is_its_weight_norm():
    w = torch.randn(3 * 4 * 4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(6, 3, 4, 4, requires_grad=True)
    logits = (x.flatten(1) * w).sum(1)
    assert torch.allclose(r1_penalty(logits, x), w.pow(2).sum(), rtol=1e-5)


def test_r1_is_differentiable_with_respect_to_the_discriminator():
    w = torch.randn(12, requires_grad=True)
    x = torch.randn(2, 12, requires_grad=True)
    penalty = r1_penalty((x * w).pow(2).sum(1), x)  # d/dx = 2 w^2 x
    penalty.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_pose_loss():
    assert pose_loss(torch.tensor([[0.1, 0.2]]), torch.tensor([[0.1, 0.2]])).item() == 0.0
    assert math.isclose(pose_loss(torch.tensor([[0.3, 0.0]]), torch.zeros(1, 2)).item(), 0.045, rel_tol=1e-6)


@pytest.mark.parametrize("res", [16, 64])
def test_discriminator_shapes_and_gradients(res):
    d = PoseDiscriminator(res, channel_base=256, channel_max=32)
    img = torch.randn(4, 3, res, res, requires_grad=True)
    logits, pose = d(img)
    assert logits.shape == (4,) and pose.shape == (4, 2)
    (logits.sum() + pose.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d.parameters())
    with pytest.raises(ValueError):
        PoseDiscriminator(48)
