import jax
import numpy as np
import pytest
from flax import nnx

import vae_jax
from vae_core import layout
from vae_core.checkpoint import write_checkpoint
from vae_core.config import VAEConfig

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4, 8), latent_dim=2, num_classes=3)
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # one per XLA compilation


def _compiles(call) -> int:
    seen = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        call()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return len(seen)


def test_the_public_methods_run_one_compiled_program_per_shape_and_agree_with_the_traced_model():
    """An op-by-op dispatch compiles each primitive; the methods compile one program per shape, once."""
    model = vae_jax.init_model(CONFIG, 0)
    rng = np.random.default_rng(0)
    x = rng.random((3, 8, 8, 1), dtype=np.float32)
    z = rng.standard_normal((3, 2)).astype(np.float32)
    labels = np.array([0, 1, 2])
    calls = {"encode": lambda: model.encode(x, labels=labels), "decode": lambda: model.decode(z, labels=labels),
             "forward": lambda: model(x, z, labels=labels), "sample": lambda: model.sample(3, labels=labels),
             "reconstruct": lambda: model.reconstruct(x, labels=labels)}
    for name, call in calls.items():
        assert _compiles(call) <= 6, name  # its program and the input checks' reductions (op by op: 28-38)
        assert _compiles(call) == 0, name  # the same shapes again: nothing new
    with jax.disable_jit():  # the same methods computed op by op
        eager_decoding = model.decode(z, labels=labels, check_inputs=False)
        eager_reconstruction = model.reconstruct(x, labels=labels, check_inputs=False)
    np.testing.assert_allclose(model.decode(z, labels=labels), eager_decoding, rtol=1e-6, atol=1e-6)
    traced = nnx.jit(lambda m, z, labels: m.decode(z, labels=labels))(model, z, labels)  # inside a user's jit
    np.testing.assert_allclose(traced, eager_decoding, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.reconstruct(x, labels=labels), eager_reconstruction, rtol=1e-6, atol=1e-6)


@pytest.mark.fast
def test_check_inputs_false_computes_the_same_and_skips_the_checks():
    """Each method with check_inputs=False returns exactly what the checked call does on valid input, and
    refuses nothing: images out of [0, 1] (which the checks refuse) still encode, decode and reconstruct."""
    model = vae_jax.init_model(CONFIG, 0)
    rng = np.random.default_rng(1)
    x = jax.numpy.asarray(rng.random((3, 8, 8, 1), dtype=np.float32))
    eps = jax.numpy.asarray(rng.standard_normal((3, 2)).astype(np.float32))
    labels = jax.numpy.asarray([0, 1, 2])
    checked = {"encode": model.encode(x, labels=labels), "decode": model.decode(eps, labels=labels),
               "forward": model(x, eps, labels=labels), "reconstruct": model.reconstruct(x, labels=labels)}
    unchecked = {"encode": model.encode(x, labels=labels, check_inputs=False),
                 "decode": model.decode(eps, labels=labels, check_inputs=False),
                 "forward": model(x, eps, labels=labels, check_inputs=False),
                 "reconstruct": model.reconstruct(x, labels=labels, check_inputs=False)}
    for name in checked:
        for a, b in zip(*(jax.tree.leaves(out[name]) for out in (checked, unchecked)), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)
    wrong_range = x * 255
    with pytest.raises(ValueError, match=r"expected them in \[0, 1\]"):
        model.reconstruct(wrong_range, labels=labels)
    model.encode(wrong_range, labels=labels, check_inputs=False)
    model(wrong_range, eps, labels=labels, check_inputs=False)
    assert model.reconstruct(wrong_range, labels=labels, check_inputs=False).shape == x.shape
    model.decode(jax.numpy.full((3, 2), np.nan), labels=labels, check_inputs=False)  # NaN latents: unchecked


@pytest.mark.fast
def test_float64_jax_model_needs_x64():
    with pytest.raises(ValueError, match="64-bit JAX"):
        vae_jax.init_model(INPUT_CHECKS_CONFIG, dtype="float64")


INPUT_CHECKS_CONFIG = VAEConfig(image_shape=(1, 8, 12), conv_channels=(4, 8), latent_dim=3)
X64_WAYS = ("JAX_ENABLE_X64=1", "jax.config.update('jax_enable_x64', True)", "with jax.enable_x64(True):",
            "dtype=jnp.float32", "--backend torch")


@pytest.mark.fast
def test_float64_without_64_bit_jax_names_every_way_to_it(tmp_path):
    assert not jax.config.jax_enable_x64
    with pytest.raises(ValueError, match="a float64 model needs 64-bit JAX") as model_error:
        vae_jax.init_model(INPUT_CHECKS_CONFIG, dtype="float64")
    path = tmp_path / "m.safetensors"  # a float64 checkpoint, as the torch twin writes one
    write_checkpoint(path, layout.init_weights(INPUT_CHECKS_CONFIG, 0, np.float64), INPUT_CHECKS_CONFIG)
    with pytest.raises(ValueError, match="holds float64 weights but 64-bit JAX is off") as checkpoint_error:
        vae_jax.load_checkpoint(path)
    for error in (model_error, checkpoint_error):
        assert all(way in str(error.value) for way in X64_WAYS), error.value
