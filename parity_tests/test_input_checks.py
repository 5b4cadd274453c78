"""Bad input gets the same clear error from both twins, at the public API, before any computation."""

import numpy as np
import pytest
import torch

import vae_jax
import vae_torch
from vae_core import layout as core
from vae_core.config import VAEConfig

pytestmark = pytest.mark.fast  # the input checks: all of them in the fast tier

CONFIG = VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 8), latent_dim=3)


class Torch:
    pkg = vae_torch

    @staticmethod
    def images(x):  # canonical NCHW numpy -> this twin's input
        return torch.as_tensor(x)

    @staticmethod
    def array(a):
        return torch.as_tensor(a)


class Jax:
    pkg = vae_jax

    @staticmethod
    def images(x):  # channels last, for a batch or a single image (numpy: the twin takes it as is)
        return np.ascontiguousarray(np.moveaxis(np.asarray(x), -3, -1))

    @staticmethod
    def array(a):
        return np.asarray(a)


@pytest.fixture(params=[Torch, Jax], ids=["torch", "jax"])
def twin(request):
    twin = request.param
    twin.model = twin.pkg.init_model(CONFIG, seed=0)
    return twin


def _good(n=2):
    rng = np.random.default_rng(0)
    return rng.random((n, *CONFIG.image_shape)).astype(np.float32), np.zeros((n, 3), np.float32)


def test_good_input_runs(twin):
    x, eps = _good()
    out = twin.model(twin.images(x), twin.array(eps))
    assert tuple(out.mu.shape) == (2, 3)
    recon = np.asarray(twin.model.reconstruct(twin.images(x)))
    samples = np.asarray(twin.model.sample(4, seed=1))
    assert recon.shape == np.asarray(twin.images(x)).shape and samples.shape[0] == 4
    assert recon.min() >= 0 and recon.max() <= 1 and samples.min() >= 0 and samples.max() <= 1


@pytest.mark.parametrize("mutate, error, words", [
    (lambda x: x[0], ValueError, "add a batch dimension"),
    (lambda x: x[:, :, :4], ValueError, "expected (N,"),
    (lambda x: x.astype(np.float64), TypeError, "dtype float64"),
    (lambda x: np.where(x > 0.5, np.nan, x).astype(np.float32), ValueError, "NaN"),
    (lambda x: (x + np.inf).astype(np.float32), ValueError, "NaN or inf"),
    (lambda x: x * 255, ValueError, "expected them in [0, 1]"),
    (lambda x: x[:0], ValueError, "N >= 1"),
])
def test_bad_images(twin, mutate, error, words):
    x, eps = _good()
    bad = mutate(x)
    images = twin.images(bad)
    for call in (lambda: twin.model(images, twin.array(eps[: max(len(bad), 1)])),
                 lambda: twin.model.encode(images), lambda: twin.model.reconstruct(images)):
        with pytest.raises(error) as info:
            call()
        assert words in str(info.value) and str(info.value).startswith(("x has", "x contains")), info.value


def test_other_layout_is_named(twin):
    x, eps = _good()
    wrong = np.asarray(twin.images(x)).transpose(0, 3, 1, 2) if twin is Jax else x.transpose(0, 2, 3, 1)
    with pytest.raises(ValueError, match="it looks like N"):
        twin.model(twin.array(np.ascontiguousarray(wrong)), twin.array(eps))


def test_bad_latents(twin):
    x, eps = _good()
    with pytest.raises(ValueError, match=r"eps has shape \(3, 3\), expected \(2, 3\)"):
        twin.model(twin.images(x), twin.array(np.zeros((3, 3), np.float32)))
    with pytest.raises(ValueError, match=r"z has shape \(2, 4\), expected \(N, 3\)"):
        twin.model.decode(twin.array(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="z contains NaN"):
        twin.model.decode(twin.array(np.full((2, 3), np.nan, np.float32)))
    with pytest.raises(TypeError, match="must be a"):
        twin.model.decode([[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="n must be a positive int"):
        twin.model.sample(0)


def test_loss_checks_its_target(twin):
    x, eps = _good()
    out = twin.model(twin.images(x), twin.array(eps))
    with pytest.raises(ValueError, match="x has shape"):
        twin.pkg.vae_loss(out, twin.images(x[:1]), CONFIG)
    with pytest.raises(ValueError, match=r"x has values in \[0.00\d+, 1.99\d+\], expected them in \[0, 1\]"):
        twin.pkg.vae_loss(out, twin.images(x * 2), CONFIG)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bad_batch_leaves_training_state_untouched(twin, compiled):
    x, eps = _good()
    state = twin.pkg.create_train_state(twin.model)
    step = twin.pkg.compile_train_step(state) if compiled else twin.pkg.train_step
    before = twin.pkg.export_weights(state.model)
    with pytest.raises(ValueError, match="NaN"):
        step(state, twin.images(np.full_like(x, np.nan)), twin.array(eps))
    after = twin.pkg.export_weights(state.model)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    state, losses = step(state, twin.images(x), twin.array(eps))
    assert np.isfinite(float(losses.total)) and int(state.step) == 1


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name, value", [("beta", float("nan")), ("beta", float("inf")), ("beta", -1.0),
                                         ("learning_rate", float("nan")), ("learning_rate", -1e-3)])
def test_a_bad_beta_or_learning_rate_is_refused_before_the_step(twin, compiled, name, value):
    x, eps = _good()
    state = twin.pkg.create_train_state(twin.model)
    step = twin.pkg.compile_train_step(state) if compiled else twin.pkg.train_step
    before = twin.pkg.export_weights(state.model)
    words = "beta" if name == "beta" else "learning rate"
    with pytest.raises(ValueError, match=f"{words} must be a finite number >= 0, got {value}"):
        step(state, twin.images(x), twin.array(eps), **{name: value})
    after = twin.pkg.export_weights(state.model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # the parameters are as they were


def test_weights_that_do_not_match_the_config(twin):
    weights = core.init_weights(CONFIG, seed=0)
    weights["fc_mu.weight"] = weights["fc_mu.weight"][:, :-1]
    del weights["decoder.fc.bias"]
    weights["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(core.WeightsError) as info:
        twin.pkg.import_weights(twin.model, weights)
    message = str(info.value)
    assert "missing key 'decoder.fc.bias' (expected shape (48,))" in message
    assert "unexpected key 'extra.weight' (shape (3,))" in message
    assert "key 'fc_mu.weight' has shape (3, 47), expected (3, 48)" in message


def test_checkpoint_of_another_config_is_refused(twin, tmp_path):
    path = tmp_path / "m.safetensors"
    other = VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 8), latent_dim=5)
    with pytest.raises(ValueError, match="does not match the model's config"):
        twin.pkg.save_checkpoint(path, twin.model, other)
    assert not path.exists()
    twin.pkg.save_checkpoint(path, twin.model, CONFIG, {"note": "x"})
    model, config, metadata = twin.pkg.load_checkpoint(path)
    assert config == CONFIG and metadata == {"note": "x"}
    with pytest.raises(core.WeightsError, match="fc_mu.weight"):
        twin.pkg.import_weights(twin.pkg.init_model(other), twin.pkg.export_weights(model))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        twin.pkg.load_checkpoint(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_beta_override_weighs_the_kl(twin, compiled):
    x, _ = _good()
    eps = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    out = twin.model(twin.images(x), twin.array(eps))
    total, reconstruction, kl = _values(twin.pkg.vae_loss(out, twin.images(x), CONFIG, beta=0.3))
    assert total == pytest.approx(reconstruction + 0.3 * kl, rel=1e-6) and kl > 0
    state = twin.pkg.create_train_state(twin.model)
    step = twin.pkg.compile_train_step(state) if compiled else twin.pkg.train_step
    for beta in (0.3, 2.5):  # a changing beta, as KL warm-up passes it
        state, losses = step(state, twin.images(x), twin.array(eps), beta)
        total, reconstruction, kl = _values(losses)
        assert total == pytest.approx(reconstruction + beta * kl, rel=1e-6)


def _values(losses):
    return [float(np.asarray(v.detach() if isinstance(v, torch.Tensor) else v)) for v in losses]


def test_free_bits_clamp_each_dimensions_batch_mean_kl(twin):
    x, _ = _good()
    eps = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    state = twin.pkg.create_train_state(twin.model, free_bits=0.5)
    mu, logvar = (np.asarray(_values_of(v), np.float64) for v in twin.model.encode(twin.images(x)))
    kl_per_dim = (-0.5 * (1 + logvar - mu**2 - np.exp(logvar))).mean(0)
    state, losses = twin.pkg.train_step(state, twin.images(x), twin.array(eps), 2.0)
    total, reconstruction, kl = _values(losses)
    assert kl == pytest.approx(kl_per_dim.sum(), rel=1e-5)  # the KL reported is the true one
    assert total == pytest.approx(reconstruction + 2.0 * np.maximum(kl_per_dim, 0.5).sum(), rel=1e-5)
    assert np.maximum(kl_per_dim, 0.5).sum() > kl_per_dim.sum()  # the clamp is active here
    with pytest.raises(ValueError, match="free_bits must be a finite number >= 0, got -1"):
        twin.pkg.create_train_state(twin.model, free_bits=-1)


def _values_of(v):
    return v.detach().numpy() if isinstance(v, torch.Tensor) else v


CONDITIONAL = VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 8), latent_dim=3, num_classes=4)


def test_labels_are_required_exactly_for_a_conditional_model_and_checked(twin):
    """Every public method that takes labels= refuses them missing (conditional), present (unconditional),
    of the wrong shape or dtype, or out of range, with the same words in both twins; a refused training
    step, eager or compiled, leaves the parameters as they were. Good labels run (the training step in
    its twin's fast form only: torch eager, JAX jitted)."""
    model = twin.pkg.init_model(CONDITIONAL, seed=0)
    x, eps = _good(2)
    x, eps, z = twin.images(x), twin.array(eps), twin.array(np.zeros((2, 3), np.float32))
    state = twin.pkg.create_train_state(model)
    compiled = twin.pkg.compile_train_step(state)
    fast = compiled if twin is Jax else twin.pkg.train_step
    calls = {"encode": lambda y: model.encode(x, labels=y), "decode": lambda y: model.decode(z, labels=y),
             "forward": lambda y: model(x, eps, labels=y), "sample": lambda y: model.sample(2, labels=y),
             "reconstruct": lambda y: model.reconstruct(x, labels=y),
             "train_step": lambda y: fast(state, x, eps, labels=y)}
    refused = {**calls, "eager": lambda y: twin.pkg.train_step(state, x, eps, labels=y),
               "compiled": lambda y: compiled(state, x, eps, labels=y)}
    bad = [(None, ValueError, r"class-conditional \(num_classes=4\): pass labels="),
           (np.array([0, 4]), ValueError, r"labels has values in \[0, 4\], expected class indices in \[0, 3\]"),
           (np.array([-1, 0]), ValueError, r"labels has values in \[-1, 0\]"),
           (np.array([0, 1, 2]), ValueError, r"labels has shape \(3,\), expected \(2,\): one class index"),
           (np.array([0.0, 1.0], np.float32), TypeError, "labels has dtype float32; class labels are integer")]
    before = twin.pkg.export_weights(state.model)
    for call in refused.values():
        for given, error, words in bad:
            with pytest.raises(error, match=words):
                call(None if given is None else twin.array(given))
    after = twin.pkg.export_weights(state.model)
    assert all(np.array_equal(before[k], after[k]) for k in before)  # no refused step moved a parameter
    for call in calls.values():
        call(twin.pkg.as_labels(np.array([0, 3]), model))  # good labels run
    with pytest.raises(ValueError, match=r"labels= was given, but this model is unconditional"):
        twin.model.sample(2, labels=twin.pkg.as_labels(np.array([0, 1]), twin.model))
