import numpy as np

from twinvae.parity.harness import first_step_error


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


def test_more_adam_steps_than_a_case_names_are_compared(monkeypatch):
    from twinvae.parity import harness

    (case,) = [c for c in harness.CASES if c.name.startswith("mlp 1x8x8")]
    steps = {"torch": 0, "jax": 0}  # the steps each twin takes (the torch twin's include the reference's)
    for twin, name in ((harness.TorchTwin, "torch"), (harness.JaxTwin, "jax")):
        def counted(self, *args, step=twin.train_step, name=name, **kwargs):
            steps[name] += 1
            return step(self, *args, **kwargs)

        monkeypatch.setattr(twin, "train_step", counted)
    rows = harness.compare(case, "float64", steps=case.steps + 2)
    (loss,) = [r for r in rows if r.quantity == "adam.loss" and r.twin == "jax"]
    assert loss.ok and all(r.ok for r in rows)
    assert steps == {"torch": case.steps + 2, "jax": case.steps + 2}  # float64: the reference, one JAX twin


def test_the_batch_size_given_applies_to_the_standard_cases():
    from twinvae.parity import cli, harness

    parser = cli.parser()
    args = parser.parse_args(["--batch-size", "3", "--case", "mlp 1x8x8"])
    assert [c.batch_size for c in cli._cases(parser, args, harness)] == [3]
