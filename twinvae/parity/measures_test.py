import numpy as np

from twinvae.parity.measures import first_step_error


def test_first_step_leaves_out_only_parameters_whose_gradient_is_at_rounding_level():
    ref_grads = {"w": np.array([1.0, -0.5, 1e-9, 0.25])}
    before = np.array([0.5, 0.5, 0.5, 0.5])
    ref = {"w": before - 1e-3 * np.sign(ref_grads["w"])}  # Adam's first step: about lr * sign(g)
    flipped = {"w": ref["w"] + np.array([0.0, 0.0, 2e-3, 0.0])}  # the tiny gradient rounded to the other sign
    assert first_step_error(flipped, ref, ref_grads, 1e-4) == (0.0, "w")
    wrong = {"w": ref["w"] + np.array([0.0, 0.0, 0.0, 2e-2])}  # a real gradient stepped wrongly
    error, key = first_step_error(wrong, ref, ref_grads, 1e-4)
    assert key == "w" and np.isclose(error, 2e-2 / np.max(np.abs(ref["w"])))


def test_first_step_error_never_hides_a_nan():
    ref_grads = {"w": np.array([1.0, 1e-12])}
    ref = {"w": np.array([0.5, 0.5])}
    assert first_step_error({"w": np.array([0.5, np.nan])}, ref, ref_grads, 1e-4)[0] == float("inf")
