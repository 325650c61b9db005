"""GAN losses and the discriminator against closed-form answers."""
import math

import pytest
import torch

from gramcast.training.losses import discriminator_loss, generator_loss, pose_loss, r1_penalty
from gramcast.training.networks.discriminator import PoseDiscriminator, minibatch_stddev


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


def test_minibatch_stddev_is_zero_for_a_collapsed_set_beside_a_diverse_one():
    # reals all different, fakes all the same sample: the fakes' statistic must be ~0 (sqrt of the
    # 1e-8 floor) whatever the reals beside them look like, the reals' must be their own spread.
    g = torch.Generator().manual_seed(0)
    reals = torch.randn(4, 5, 3, 3, generator=g)
    fakes = torch.randn(1, 5, 3, 3, generator=g).expand(4, 5, 3, 3)
    stat = minibatch_stddev(torch.cat([reals, fakes]), group=4, sets=2)[:, -1]
    assert stat.shape == (8, 3, 3)
    assert torch.allclose(stat[4:], torch.full_like(stat[4:], 1e-4))
    expected_real = reals.var(0, unbiased=False).add(1e-8).sqrt().mean()
    assert torch.allclose(stat[:4], expected_real.expand(4, 3, 3), rtol=1e-5)


def test_minibatch_stddev_groups_stay_inside_their_set():
    # a batch of 6 reals + 6 fakes with group 4: groups of 3 (the largest size <= 4 dividing 6)
    x = torch.arange(12.0).reshape(12, 1, 1, 1)
    stat = minibatch_stddev(x, group=4, sets=2)[:, -1, 0, 0]
    spread_of_three = torch.tensor([0.0, 1.0, 2.0]).var(unbiased=False).sqrt()
    assert torch.allclose(stat, spread_of_three.expand(12), rtol=1e-4)
    with pytest.raises(ValueError):
        minibatch_stddev(torch.zeros(5, 1, 1, 1), sets=2)


def test_discriminator_scores_of_one_set_do_not_depend_on_the_other():
    torch.manual_seed(0)
    d = PoseDiscriminator(16, channel_base=256, channel_max=32)
    reals, fakes_a, fakes_b = (torch.randn(4, 3, 16, 16) for _ in range(3))
    logits_a, pose_a = d(torch.cat([reals, fakes_a]), sets=2)
    logits_b, pose_b = d(torch.cat([reals, fakes_b]), sets=2)
    assert torch.allclose(logits_a[:4], logits_b[:4]) and torch.allclose(pose_a[:4], pose_b[:4])
    assert not torch.allclose(logits_a[4:], logits_b[4:])
    # the fakes score as they would alone, which is how the generator's update sees them
    alone, _ = d(fakes_a)
    assert torch.allclose(logits_a[4:], alone, atol=1e-6)
