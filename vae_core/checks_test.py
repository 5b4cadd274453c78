import numpy as np
import pytest

from vae_core import checks

pytestmark = pytest.mark.fast  # the input checks: all of them in the fast tier


@pytest.mark.parametrize("value", [2, 2.0, np.float32(2), np.int64(2), np.array(2.0), np.array(2, np.int32)])
def test_a_number_is_a_real_number_or_a_0d_array_of_one(value):
    assert checks.check_beta(value) == checks.check_free_bits(value) == checks.check_learning_rate(value) == 2.0


@pytest.mark.parametrize("value", ["1", b"1", True, np.bool_(True), None, [1.0], np.array([1.0]),
                                   np.array(1.0 + 0j), np.array("1")])
@pytest.mark.parametrize("check, name", [(checks.check_beta, "beta"), (checks.check_free_bits, "free_bits"),
                                         (checks.check_learning_rate, "learning rate")])
def test_anything_else_is_refused_by_name(check, name, value):
    with pytest.raises(ValueError, match=f"^{name} must be a finite number >= 0, got "):
        check(value)


def test_adam_returns_its_hyperparameters_as_floats():
    rate, betas, eps = checks.check_adam(np.float32(0.5), [np.array(0.0), 0.999], 0)
    assert (rate, betas, eps) == (0.5, (0.0, 0.999), 0.0)
    assert all(type(v) is float for v in (rate, *betas, eps))


@pytest.mark.parametrize("learning_rate, betas, eps, message", [
    (float("nan"), (0.9, 0.999), 1e-8, "learning rate must be a finite number >= 0, got nan"),
    (-1e-3, (0.9, 0.999), 1e-8, "learning rate must be a finite number >= 0, got -0.001"),
    ("1e-3", (0.9, 0.999), 1e-8, "learning rate must be a finite number >= 0, got '1e-3'"),
    (1e-3, (1.5, 2.0), 1e-8, "betas[0] must be a number in [0, 1), got 1.5"),
    (1e-3, (0.9, 1.0), 1e-8, "betas[1] must be a number in [0, 1), got 1.0"),
    (1e-3, (0.9, float("nan")), 1e-8, "betas[1] must be a number in [0, 1), got nan"),
    (1e-3, ("0.9", 0.999), 1e-8, "betas[0] must be a number in [0, 1), got '0.9'"),
    (1e-3, (True, 0.999), 1e-8, "betas[0] must be a number in [0, 1), got True"),
    (1e-3, 0.9, 1e-8, "betas must be a pair of numbers in [0, 1), got 0.9"),
    (1e-3, (0.9, 0.99, 0.999), 1e-8, "betas must be a pair of numbers in [0, 1), got (0.9, 0.99, 0.999)"),
    (1e-3, "ab", 1e-8, "betas must be a pair of numbers in [0, 1), got 'ab'"),
    (1e-3, (0.9, 0.999), -1, "eps must be a finite number >= 0, got -1"),
    (1e-3, (0.9, 0.999), float("inf"), "eps must be a finite number >= 0, got inf"),
    (1e-3, (0.9, 0.999), "1e-8", "eps must be a finite number >= 0, got '1e-8'"),
])
def test_adam_refuses_what_torch_refuses_naming_the_argument(learning_rate, betas, eps, message):
    with pytest.raises(ValueError) as info:
        checks.check_adam(learning_rate, betas, eps)
    assert str(info.value) == message


def test_eps_of_the_forward_may_hold_k_samples_of_each_image():
    checks.check_latent_batch("eps", (3, 4, 2), "float32", 2, "float32", batch_size=4, samples=True)
    checks.check_latent_batch("eps", (4, 2), "float32", 2, "float32", batch_size=4, samples=True)
    for shape, samples in (((3, 4, 2), False), ((3, 5, 2), True), ((0, 4, 2), True), ((1, 3, 4, 2), True)):
        with pytest.raises(ValueError, match=r"eps has shape .*, expected \(4, 2\)"):
            checks.check_latent_batch("eps", shape, "float32", 2, "float32", batch_size=4, samples=samples)


@pytest.mark.parametrize("shape, train_samples, expected", [
    ((4, 2), 3, r"expected \(3, N, noise_dim\)"), ((2, 4, 2), 3, r"expected \(3, N, noise_dim\)"),
    ((1, 4, 2), 1, r"expected \(N, noise_dim\)"),
])
def test_a_training_step_takes_the_configs_samples(shape, train_samples, expected):
    checks.check_train_samples("eps", (3, 4, 2), 3)
    checks.check_train_samples("eps", (4, 2), 1)
    with pytest.raises(ValueError, match=expected):
        checks.check_train_samples("eps", shape, train_samples)
