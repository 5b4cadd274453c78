import numpy as np
import pytest

from vae_core import seeds


def test_derived_seeds_are_stable_and_distinct():
    # Golden values: a change here silently changes every run's data order and noise.
    assert seeds.derive_seed(0, "eps") == seeds.derive_seed(0, "eps")
    values = {seeds.derive_seed(s, p) for s in (0, 1) for p in seeds.PURPOSES}
    assert len(values) == 2 * len(seeds.PURPOSES)
    assert seeds.eps_for_step(0, 0, 1, 3).round(6).tolist() == GOLDEN_EPS


GOLDEN_EPS = [[-1.501921, -0.777819, -0.85469]]


def test_steps_are_counter_based_and_dtypes_agree():
    a = seeds.eps_for_step(7, 5, 4, 3)
    assert np.array_equal(a, seeds.eps_for_step(7, 5, 4, 3))
    assert not np.array_equal(a, seeds.eps_for_step(7, 6, 4, 3))
    assert np.array_equal(a.astype(np.float32), seeds.eps_for_step(7, 5, 4, 3, np.float32))


@pytest.mark.parametrize("seed, purpose", [(-1, "eps"), (1.5, "eps"), (True, "eps"), (0, "dropout")])
def test_bad_seeds_and_purposes(seed, purpose):
    with pytest.raises(ValueError):
        seeds.derive_seed(seed, purpose)
