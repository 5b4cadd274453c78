from twinvae.parity.cases import CASES
from twinvae.parity.comparisons import compare
from twinvae.parity.twins import ComparedTwin


def test_more_adam_steps_than_a_case_names_are_compared(monkeypatch):
    (case,) = [c for c in CASES if c.name.startswith("mlp 1x8x8")]
    steps = {"torch": 0, "jax": 0}  # the steps each twin takes (the torch twin's include the reference's)
    step = ComparedTwin.train_step  # JittedTwin's too

    def counted(self, *args, **kwargs):
        steps[self.name.split("/")[0]] += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(ComparedTwin, "train_step", counted)
    rows = compare(case, "float64", steps=case.steps + 2)
    (loss,) = [r for r in rows if r.quantity == "adam.loss" and r.twin == "jax"]
    assert loss.ok and all(r.ok for r in rows)
    assert steps == {"torch": case.steps + 2, "jax": case.steps + 2}  # float64: the reference, one JAX twin
