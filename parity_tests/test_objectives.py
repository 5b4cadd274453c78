"""The training objectives and priors in both twins: the IWAE bound (Burda et al. 2015) of K = 3 samples
against its formula in numpy float64, one sample as the ELBO bitwise, the terms the bound has not refused
by name, eps of K samples split on its batch axis for data-parallel steps; the VampPrior (Tomczak & Welling
2018): its log p(z), its ELBO and its IWAE bound against numpy, its pseudo-inputs' bounds and gradients,
and sampling from its mixture; the two-level model (Tomczak & Welling's HVAE): its forward pass, ELBO and
IWAE bound written in numpy from its canonical weights, and its sampling, decoding and reconstruction."""

import dataclasses

import jax
import numpy as np
import pytest

import vae_jax
import vae_torch
from parity_tests.test_evaluation import reference_log_weights, reference_terms
from twinvae.parity.tolerances import tolerance
from vae_core import seeds
from vae_core.config import VAEConfig
from vae_core.layout import init_weights
from vae_core.likelihood import nats_offset
from vae_core.parallel import batch_axis, worker_slice

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, objective="iwae", train_samples=3)


def _twins(config, weights):
    """Both twins' float64 models of the weights (64-bit JAX is on while the module's tests run)."""
    torch_model = vae_torch.import_weights(vae_torch.VAE(config, dtype="float64"), weights)
    jax_model = vae_jax.import_weights(vae_jax.VAE(config, rngs=vae_jax.model.nnx.Rngs(0), dtype="float64"),
                                       weights)
    return {vae_torch: torch_model, vae_jax: jax_model}


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _losses(twin, model, x, eps, y, config):
    """The twin's vae_loss of its forward pass, and its train step's losses, on canonical numpy."""
    x, e = twin.as_input(x, model), twin.as_input(eps, model)
    labels = None if y is None else twin.as_labels(y, model)
    loss = twin.vae_loss(model(x, e, labels=labels), x, config)
    _, step_loss = twin.train_step(twin.create_train_state(model), x, e, labels=labels)
    return [float(twin.to_numpy(v)) for v in loss], [float(twin.to_numpy(v)) for v in step_loss]


@pytest.mark.parametrize("likelihood, num_classes", [("bernoulli", 0), ("gaussian", 0), ("bernoulli", 3)],
                         ids=["bernoulli", "gaussian", "bernoulli-conditional"])
def test_the_iwae_loss_is_burdas_bound_in_numpy(likelihood, num_classes):
    """-1/N sum_n log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n), z_k = mu + sigma eps_k (Burda et al.'s L_K,
    eq. 8), written with numpy's exp and mean, against each twin's loss and its train step's. The loss
    leaves out the Gaussian's constant normaliser, as the ELBO's does. Conditional: each image's label
    goes with its K samples."""
    config = dataclasses.replace(CONFIG, likelihood=likelihood, num_classes=num_classes)
    weights = init_weights(config, 0, np.float64)
    rng = np.random.default_rng(1)
    x, eps = rng.random((5, 1, 8, 8)), seeds.eps_for_step(0, 0, 5, config.latent_dim, samples=3)
    y = np.array([2, 0, 1, 1, 0]) if num_classes else None
    log_w = reference_log_weights(config, weights, x, eps, y) + nats_offset(likelihood, config.num_pixels)
    expected = -np.mean(np.log(np.mean(np.exp(log_w), axis=0)))
    for twin, model in _twins(config, weights).items():
        (total, reconstruction, kl), step = _losses(twin, model, x, eps, y, config)
        assert total == pytest.approx(expected, rel=1e-10), twin.__name__
        assert step[0] == pytest.approx(expected, rel=1e-10), twin.__name__
        assert total < reconstruction + kl  # the bound is tighter than the K samples' ELBO estimate
        assert -np.mean(log_w) == pytest.approx(reconstruction + kl, rel=1e-10)


def test_one_sample_is_the_elbo_bitwise():
    """objective "iwae" of one sample computes the ELBO's path (the closed-form KL): the same losses, bit
    for bit, in each twin, from the same (N, latent) eps."""
    elbo = dataclasses.replace(CONFIG, train_samples=1, objective="elbo")
    one = dataclasses.replace(elbo, objective="iwae")
    weights = init_weights(elbo, 0, np.float64)
    x, eps = np.random.default_rng(0).random((4, 1, 8, 8)), seeds.eps_for_step(0, 0, 4, elbo.latent_dim)
    for (twin, model), (_, same) in zip(_twins(elbo, weights).items(), _twins(one, weights).items()):
        assert _losses(twin, model, x, eps, None, elbo) == _losses(twin, same, x, eps, None, one)


@pytest.mark.parametrize("twin", [vae_torch, vae_jax], ids=["torch", "jax"])
def test_what_the_bound_has_not_is_refused_by_name(twin):
    """Free bits on the state, beta on a step, and eps of another number of samples than the config's."""
    weights = init_weights(CONFIG, 0, np.float64)
    model = _twins(CONFIG, weights)[twin]
    with pytest.raises(ValueError, match="free bits = 0.5 conflicts with objective='iwae' and train_samples=3"):
        twin.create_train_state(model, free_bits=0.5)
    x = twin.as_input(np.full((2, 1, 8, 8), 0.5), model)
    state = twin.create_train_state(model)
    for step in (twin.train_step, twin.compile_train_step(state)):
        with pytest.raises(ValueError, match="beta = 0.5 conflicts with objective='iwae'"):
            step(state, x, twin.as_input(np.zeros((3, 2, 4)), model), 0.5)
        with pytest.raises(ValueError, match=r"train_samples=3 sample\(s\) of z per image: expected \(3, N, "):
            step(state, x, twin.as_input(np.zeros((2, 4)), model))
    elbo = _twins(dataclasses.replace(CONFIG, objective="elbo", train_samples=1), weights)[twin]
    with pytest.raises(ValueError, match=r"expected \(N, noise_dim\)"):
        twin.train_step(twin.create_train_state(elbo), twin.as_input(np.full((2, 1, 8, 8), 0.5), elbo),
                        twin.as_input(np.zeros((3, 2, 4)), elbo))


def test_eps_of_k_samples_is_split_on_its_batch_axis():
    """A data-parallel worker takes its images' rows of every sample: eps (K, N, latent) along axis 1."""
    eps = np.arange(3 * 4 * 2).reshape(3, 4, 2)
    assert batch_axis("eps", eps) == 1 and batch_axis("eps", eps[0]) == 0 and batch_axis("x", eps) == 0
    assert np.array_equal(worker_slice(eps, 1, 2, axis=1), eps[:, 2:])
    with pytest.raises(ValueError, match="a global batch of 4 does not divide by 3 processes"):
        worker_slice(eps, 0, 3, axis=1)


def test_float64_holds_the_bound_s_gradients_to_its_pixels_rounding():
    """The IWAE bound's log-weights are rounded at about D nats times u (D pixels): its float64 gradient and
    Adam tolerances are D times the ELBO's, the rest as the ELBO's, float32 unchanged."""
    elbo = dataclasses.replace(CONFIG, objective="elbo", train_samples=1)
    for kind in ("grad", "adam_step1", "adam_params"):
        assert tolerance("float64", kind, CONFIG) == 64 * tolerance("float64", kind, elbo) == 64 * 1e-10
        assert tolerance("float32", kind, CONFIG) == tolerance("float32", kind, elbo)
    assert tolerance("float64", "loss", CONFIG) == tolerance("float64", "forward", CONFIG) == 1e-10


VAMP = VAEConfig(image_shape=(1, 8, 8), conv_channels=(8, 16), latent_dim=4, prior="vamp", pseudo_inputs=6)


def _log_density(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)), as the product of the dimensions' densities."""
    variance = np.exp(logvar)
    return np.log((np.exp(-((z - mu) ** 2) / (2 * variance)) / np.sqrt(2 * np.pi * variance)).prod(-1))


def _log_mixture(z, mu, logvar):
    """log (1/P) sum_p N(z; mu_p, diag sigma_p^2) (Tomczak & Welling 2018, eq. 9) of components (P, latent)."""
    return np.log(np.exp(_log_density(z[..., None, :], mu, logvar)).mean(-1))


def vamp_log_prior(config, weights):
    """numpy: z -> log p(z), the VampPrior's mixture (_log_mixture), its components the torch encoder's
    posteriors at the pseudo-inputs clipped to [0, 1], the densities written with numpy's exp and product."""
    model = vae_torch.import_weights(vae_torch.VAE(config, dtype="float64"), weights)
    u = np.clip(weights["pseudo_inputs"], 0.0, 1.0)
    mu, logvar = (vae_torch.to_numpy(v) for v in model.encode(vae_torch.as_input(u, model)))
    return lambda z: _log_mixture(z, mu, logvar)


@pytest.mark.parametrize("objective, samples, beta", [("elbo", 1, 0.5), ("iwae", 3, 1.0)], ids=["elbo", "iwae"])
def test_the_vampprior_is_tomczak_and_wellings_in_numpy(objective, samples, beta):
    """log p(z) of each twin against the mixture's density in numpy; the ELBO with its single-sample KL
    estimate log q(z|x) - log p(z) (beta 0.5), and the IWAE bound of K = 3 with it, against the formulas;
    each twin's loss and its train step's."""
    config = dataclasses.replace(VAMP, objective=objective, train_samples=samples, beta=beta)
    weights = init_weights(config, 0, np.float64)
    rng = np.random.default_rng(2)
    weights["pseudo_inputs"] = rng.random(weights["pseudo_inputs"].shape)  # spread: distinct components
    x, eps = rng.random((5, 1, 8, 8)), seeds.eps_for_step(0, 0, 5, config.latent_dim, samples=samples)
    log_prior = vamp_log_prior(config, weights)
    log_px, log_pz, log_qz = reference_terms(config, weights, x, eps[None] if samples == 1 else eps,
                                             log_prior=log_prior)
    if objective == "elbo":  # -log p(x|z) + beta (log q(z|x) - log p(z)) at the one z
        expected = np.mean(-log_px) + beta * np.mean(log_qz - log_pz)
    else:
        expected = -np.mean(np.log(np.mean(np.exp(log_px + log_pz - log_qz), axis=0)))
    z = rng.standard_normal((7, config.latent_dim))
    for twin, model in _twins(config, weights).items():
        given = twin.to_numpy(twin.log_prior(twin.as_input(z, model), model.prior_components()))
        assert np.allclose(given, log_prior(z), rtol=1e-12, atol=0), twin.__name__
        (total, _, _), step = _losses(twin, model, x, eps, None, config)  # (torch's step updates its model)
        assert total == pytest.approx(expected, rel=1e-10), twin.__name__
        assert step[0] == pytest.approx(expected, rel=1e-10), twin.__name__



def _pseudo_input_gradients(twin, model, x, eps, config):
    """d loss / d pseudo-inputs, canonical (P, C, H, W), of one forward pass."""
    x, e = twin.as_input(x, model), twin.as_input(eps, model)
    if twin is vae_torch:
        twin.vae_loss(model(x, e), x, config).total.backward()
        return twin.to_numpy(model.pseudo_inputs.grad)
    grads = vae_jax.model.nnx.grad(lambda m: twin.vae_loss(m(x, e), x, config).total)(model)
    return twin.to_numpy(grads.pseudo_inputs[...])


def test_the_pseudo_inputs_are_clipped_to_the_images_range_with_torchs_gradient_at_the_bounds():
    """The encoder sees each pseudo-input clipped to [0, 1] (vae_core.layout.PSEUDO_INPUT_BOUNDS): at and
    beyond a bound its gradient is 0 in both twins (torch's hardtanh; jnp.clip's would be 1/2 at a bound),
    inside it is the same non-zero gradient."""
    weights = init_weights(VAMP, 0, np.float64)
    values = np.array([-0.5, 0.0, 0.3, 1.0, 1.5, 0.7])
    weights["pseudo_inputs"] = np.resize(values, weights["pseudo_inputs"].shape)
    x, eps = np.random.default_rng(3).random((4, 1, 8, 8)), seeds.eps_for_step(0, 0, 4, VAMP.latent_dim)
    grads = {twin: _pseudo_input_gradients(twin, model, x, eps, VAMP)
             for twin, model in _twins(VAMP, weights).items()}
    inside = (weights["pseudo_inputs"] > 0) & (weights["pseudo_inputs"] < 1)
    for twin, grad in grads.items():
        assert np.all(grad[~inside] == 0), twin.__name__
        assert np.all(grad[inside] != 0), twin.__name__
    assert np.allclose(grads[vae_jax], grads[vae_torch], rtol=1e-10, atol=1e-18)


def test_sampling_draws_a_component_then_z_from_it_in_both_twins():
    """prior_sample: each latent's component from vae_core.seeds.prior_draw, z = mu_c + sigma_c eps, the
    components the encoder's posteriors at the clipped pseudo-inputs; both twins draw the same latents."""
    weights = init_weights(VAMP, 0, np.float64)
    weights["pseudo_inputs"] = np.random.default_rng(4).random(weights["pseudo_inputs"].shape)
    eps, components = seeds.prior_draw(5, 400, VAMP.latent_dim, VAMP.pseudo_inputs)
    for twin, model in _twins(VAMP, weights).items():
        mu, logvar = (twin.to_numpy(v) for v in model.prior_components())
        expected = mu[components] + np.exp(0.5 * logvar[components]) * eps
        assert np.allclose(twin.to_numpy(model.prior_sample(400, seed=5)), expected, rtol=1e-12), twin.__name__
        images = twin.to_numpy(model.sample(3, seed=5))
        assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1


HVAE = VAEConfig(arch="mlp", image_shape=(1, 8, 8), mlp_widths=(16,), latent_dim=3, hierarchy=2, prior_width=5)


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


class NumpyHVAE:
    """numpy: the two-level MLP model (one hidden width) from its canonical weights alone."""

    def __init__(self, config, weights):
        self.config, self.weights = config, weights

    def linear(self, name, h):
        return h @ self.weights[f"{name}.weight"].T + self.weights[f"{name}.bias"]

    def top_posterior(self, x):
        """q(z2|x) of unlabelled images x (N, C, H, W): (mu, logvar), the VampPrior's components at its
        clipped pseudo-inputs."""
        features = np.maximum(self.linear("encoder.linears.0", x.reshape(len(x), -1)), 0)
        return self.linear("fc_mu", features), self.linear("fc_logvar", features)

    def log_vampprior(self, z2):
        """log p(z2) = log (1/P) sum_p N(z2; mu_p, sigma_p^2), the components q(z2 | clip(u_p, 0, 1))."""
        return _log_mixture(z2, *self.top_posterior(np.clip(self.weights["pseudo_inputs"], 0.0, 1.0)))

    def lower_prior(self, z2):
        """p(z1|z2): (mu, logvar)."""
        hidden = np.maximum(self.linear("prior_lower.hidden", z2), 0)
        return self.linear("prior_lower.mu", hidden), self.linear("prior_lower.logvar", hidden)

    def logits(self, z1, z2, label):
        h = np.maximum(self.linear("decoder.fc", np.concatenate([z1, z2, label], -1)), 0)
        return self.linear("decoder.linears.0", h)

    def forward(self, x, eps, y=None):
        """z2 = mu2 + sigma2 eps[..., :L] ~ q(z2|x), z1 = mu1 + sigma1 eps[..., L:] ~ q(z1|x,z2), p(z1|z2),
        the Bernoulli logits of (z1, z2) and log p(x|z1,z2); eps (K, N, 2L). A dict of (K, N, ...) arrays."""
        config, (k, n) = self.config, eps.shape[:2]
        classes, latent = config.num_classes, config.latent_dim
        label = np.zeros((k, n, 0)) if y is None else np.broadcast_to(np.eye(classes)[y], (k, n, classes))
        features = np.maximum(self.linear("encoder.linears.0", x.reshape(n, -1)), 0)
        features = np.broadcast_to(features, (k, *features.shape))
        top = np.concatenate([features, label], -1)
        mu2, logvar2 = self.linear("fc_mu", top), self.linear("fc_logvar", top)
        z2 = mu2 + np.exp(0.5 * logvar2) * eps[..., :latent]
        lower = np.concatenate([features, z2, label], -1)
        mu1, logvar1 = self.linear("fc_mu_lower", lower), self.linear("fc_logvar_lower", lower)
        z1 = mu1 + np.exp(0.5 * logvar1) * eps[..., latent:]
        prior_mu1, prior_logvar1 = self.lower_prior(z2)
        logits = self.logits(z1, z2, label)
        p, flat = _sigmoid(logits), x.reshape(1, n, -1)
        log_px = (flat * np.log(p) + (1 - flat) * np.log1p(-p)).sum(-1)
        return {"mu2": mu2, "logvar2": logvar2, "z2": z2, "mu1": mu1, "logvar1": logvar1, "z1": z1,
                "prior_mu1": prior_mu1, "prior_logvar1": prior_logvar1, "logits": logits, "log_px": log_px}


@pytest.mark.parametrize("objective, samples, beta, num_classes, prior",
                         [("elbo", 1, 0.5, 0, "standard"), ("elbo", 1, 1.0, 3, "standard"),
                          ("iwae", 3, 1.0, 0, "standard"), ("iwae", 3, 1.0, 0, "vamp")],
                         ids=["elbo-beta-0.5", "elbo-conditional", "iwae", "iwae-vampprior"])
def test_the_two_level_model_is_tomczak_and_wellings_hvae_in_numpy(objective, samples, beta, num_classes, prior):
    """The two-level model, p(z2) p(z1|z2) p(x|z1,z2) with q(z2|x) q(z1|x,z2), written in numpy from its
    canonical weights: the forward pass's z1 terms; the ELBO, -log p(x|z1,z2) + beta (KL(q(z2|x) || N(0, I))
    + KL(q(z1|x,z2) || p(z1|z2))), both KLs the closed form between Gaussians at the drawn z2; the IWAE bound
    of K = 3 from the five densities, with z2's prior N(0, I) or the VampPrior's mixture."""
    config = dataclasses.replace(HVAE, objective=objective, train_samples=samples, beta=beta,
                                 num_classes=num_classes, prior=prior, pseudo_inputs=4)
    weights = init_weights(config, 0, np.float64)
    rng = np.random.default_rng(5)
    if prior == "vamp":
        weights["pseudo_inputs"] = rng.random(weights["pseudo_inputs"].shape)
    x = rng.random((5, 1, 8, 8))
    y = np.array([2, 0, 1, 1, 0]) if num_classes else None
    eps = seeds.eps_for_step(0, 0, 5, config.noise_dim, samples=samples)
    ref = NumpyHVAE(config, weights).forward(x, eps[None] if samples == 1 else eps, y)
    numpy_model = NumpyHVAE(config, weights)
    log_pz2 = numpy_model.log_vampprior(ref["z2"]) if prior == "vamp" else _log_density(ref["z2"], 0.0, 0.0)
    if objective == "elbo":
        kl2 = 0.5 * (ref["mu2"] ** 2 + np.exp(ref["logvar2"]) - 1 - ref["logvar2"]).sum(-1)
        kl1 = 0.5 * (ref["prior_logvar1"] - ref["logvar1"] - 1 + (np.exp(ref["logvar1"]) + (
            ref["mu1"] - ref["prior_mu1"]) ** 2) / np.exp(ref["prior_logvar1"])).sum(-1)
        expected = np.mean(-ref["log_px"]) + beta * np.mean(kl2 + kl1)
    else:
        log_p = log_pz2 + _log_density(ref["z1"], ref["prior_mu1"], ref["prior_logvar1"])
        log_q = _log_density(ref["z2"], ref["mu2"], ref["logvar2"]) + \
            _log_density(ref["z1"], ref["mu1"], ref["logvar1"])
        log_w = ref["log_px"] + log_p - log_q
        expected = -np.mean(np.log(np.mean(np.exp(log_w), axis=0)))
    for twin, model in _twins(config, weights).items():
        labels = None if y is None else twin.as_labels(y, model)
        out = model(twin.as_input(x, model), twin.as_input(eps, model), labels=labels)
        shape = ref["z1"].shape if samples > 1 else ref["z1"].shape[1:]
        for name, given in (("mu1", out.lower.mu), ("z1", out.lower.z), ("prior_mu1", out.lower.prior_mu),
                            ("prior_logvar1", out.lower.prior_logvar), ("z2", out.z)):
            assert np.allclose(twin.to_numpy(given), ref[name].reshape(shape), rtol=1e-12, atol=1e-14), name
        (total, _, _), step = _losses(twin, model, x, eps, y, config)
        assert total == pytest.approx(expected, rel=1e-10), twin.__name__
        assert step[0] == pytest.approx(expected, rel=1e-10), twin.__name__


def test_free_bits_clamp_both_levels_per_dimension_in_numpy():
    """Free bits on a two-level model: each of the 2L per-dimension KLs (z2's against N(0, I), z1's against
    p(z1|z2) at the drawn z2) clamped at its batch mean's floor, -log p(x|z1,z2) + beta sum_d max(mean_n
    KL_nd, free bits), in both twins against numpy; the KL returned stays the true one."""
    weights = init_weights(HVAE, 0, np.float64)
    x = np.random.default_rng(8).random((6, 1, 8, 8))
    eps = seeds.eps_for_step(0, 0, 6, HVAE.noise_dim)
    ref = {k: v[0] for k, v in NumpyHVAE(HVAE, weights).forward(x, eps[None]).items()}
    kl2 = 0.5 * (ref["mu2"] ** 2 + np.exp(ref["logvar2"]) - 1 - ref["logvar2"])
    kl1 = 0.5 * (ref["prior_logvar1"] - ref["logvar1"] - 1 + (np.exp(ref["logvar1"]) + (
        ref["mu1"] - ref["prior_mu1"]) ** 2) / np.exp(ref["prior_logvar1"]))
    per_dim = np.concatenate([kl2, kl1], axis=1)
    free_bits = float(np.median(per_dim.mean(0)))  # some dimensions below it, some above
    expected = np.mean(-ref["log_px"]) + np.maximum(per_dim.mean(0), free_bits).sum()
    for twin, model in _twins(HVAE, weights).items():
        images = twin.as_input(x, model)
        loss = twin.vae_loss(model(images, twin.as_input(eps, model)), images, HVAE, free_bits=free_bits)
        assert float(twin.to_numpy(loss.total)) == pytest.approx(expected, rel=1e-10), twin.__name__
        assert float(twin.to_numpy(loss.kl)) == pytest.approx(per_dim.sum(1).mean(), rel=1e-10), twin.__name__


def test_a_two_level_model_samples_z2_then_z1_and_decodes_the_top_latent_through_p_z1_given_z2():
    """sample(): z2 ~ p(z2), z1 ~ p(z1|z2) from vae_core.seeds.prior_draw's 2L columns (z2's, then z1's
    noise); decode(z2) takes p(z1|z2)'s mean, reconstruct() q(z2|x)'s mean and q(z1|x, mu2)'s; both twins
    against numpy."""
    weights = init_weights(HVAE, 0, np.float64)
    numpy_model, latent, none = NumpyHVAE(HVAE, weights), HVAE.latent_dim, np.zeros((7, 0))
    eps, _ = seeds.prior_draw(6, 7, HVAE.noise_dim)
    z2 = eps[:, :latent]
    prior_mu1, prior_logvar1 = numpy_model.lower_prior(z2)
    sampled = _sigmoid(numpy_model.logits(prior_mu1 + np.exp(0.5 * prior_logvar1) * eps[:, latent:], z2, none))
    decoded = numpy_model.logits(prior_mu1, z2, none)
    x = np.random.default_rng(7).random((7, 1, 8, 8))
    reconstructed = _sigmoid(numpy_model.forward(x, np.zeros((1, 7, HVAE.noise_dim)))["logits"][0])
    for twin, model in _twins(HVAE, weights).items():
        given = {"sample": model.sample(7, seed=6), "decode": model.decode(twin.as_input(z2, model)),
                 "reconstruct": model.reconstruct(twin.as_input(x, model))}
        for name, expected in (("sample", sampled), ("decode", decoded), ("reconstruct", reconstructed)):
            assert np.allclose(twin.to_numpy(given[name]).reshape(7, -1), expected, rtol=1e-12), (twin, name)
        assert np.array_equal(twin.to_numpy(model.prior_sample(7, seed=6)), z2), twin.__name__
