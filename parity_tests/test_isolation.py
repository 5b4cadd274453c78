"""Importing one twin never imports the other framework: with the other made unimportable, the import,
a forward pass and a checkpoint round trip still work. vae_core imports neither, and nor does the
application until a command runs one (the parity harness aside, which compares the two)."""

import subprocess
import sys

import pytest

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(f'{{name}} is blocked in this test')
sys.meta_path.insert(0, Block())
"""

RUN_TORCH = """
import torch, vae_torch, tempfile, os
m = vae_torch.init_model(vae_torch.VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2))
out = m(torch.rand(2, 1, 8, 8), torch.randn(2, 2))
p = os.path.join(tempfile.mkdtemp(), 'm.safetensors')
vae_torch.save_checkpoint(p, m, m.config); vae_torch.load_checkpoint(p)
"""

RUN_JAX = """
import jax, jax.numpy as jnp, vae_jax, tempfile, os
m = vae_jax.init_model(vae_jax.VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2))
out = m(jnp.full((2, 8, 8, 1), 0.5), jnp.zeros((2, 2)))
p = os.path.join(tempfile.mkdtemp(), 'm.safetensors')
vae_jax.save_checkpoint(p, m, m.config); vae_jax.load_checkpoint(p)
"""

CHECK = """
bad = sorted(m for m in {blocked!r} if m in sys.modules)
assert not bad, bad
print('ok')
"""


# Every module of a package, imported; the tests and the parity harness's modules that run both twins aside
# (its tolerances, cases, measures and tables are framework-free, and imported here).
IMPORT_ALL = """
import importlib, pkgutil, {package}
for m in pkgutil.walk_packages({package}.__path__, '{package}.'):
    if not m.name.endswith(('_test', '.parity.twins', '.parity.comparisons', '.parity.compiles')):
        importlib.import_module(m.name)
"""
PARITY_FRAMEWORK_FREE = """
from twinvae.parity import cases, measures, report, tolerances
report.format_table([report.Row(cases.CASES[0].name, 'mu', 'float32', 'jax', 0.0)])
"""
FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "optax")


@pytest.mark.parametrize("run, blocked", [
    (IMPORT_ALL.format(package="vae_core"), FRAMEWORKS),
    (IMPORT_ALL.format(package="twinvae") + "from twinvae.cli import main\n"
     "import contextlib, io\n"
     "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
     "    main(['train', '--help'])\n", FRAMEWORKS),
    (PARITY_FRAMEWORK_FREE, FRAMEWORKS),
    (RUN_TORCH, ("jax", "jaxlib", "flax", "optax")),
    (RUN_JAX, ("torch",)),
], ids=["vae_core", "twinvae application", "parity tables", "vae_torch", "vae_jax"])
def test_one_twin_without_the_other_framework(run, blocked):
    code = BLOCK.format(blocked=blocked) + run + CHECK.format(blocked=blocked)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
