import jax
import numpy as np
from flax import nnx

import vae_jax
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
    np.testing.assert_allclose(model.decode(z, labels=labels), model._decode(z, labels), rtol=1e-6, atol=1e-6)
    traced = nnx.jit(lambda m, z, labels: m.decode(z, labels=labels))(model, z, labels)  # inside a user's jit
    np.testing.assert_allclose(traced, model._decode(z, labels), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.reconstruct(x, labels=labels), model._reconstruct(x, labels), rtol=1e-6,
                               atol=1e-6)
