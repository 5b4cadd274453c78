"""The command line's flags made options, a model and a resume's changes, without a command line."""

from twinvae.trainer.options import TrainOptions, changes_on_resume, config_from_flags, options_from_flags


def test_flags_win_over_a_presets_tuned_options_which_win_over_the_defaults():
    options = options_from_flags({"preset": "resnet", "lr": 0.01, "backend": "torch", "out": "run"})
    assert (options.lr, options.lr_schedule, options.epochs) == (0.01, "cosine", TrainOptions.epochs)
    assert options_from_flags({"config": "c.json"}).lr_schedule == TrainOptions.lr_schedule  # no preset's
    assert options_from_flags({}).out.startswith(f"runs/{TrainOptions.dataset}-{TrainOptions.backend}-")


def test_a_resumes_changes_are_named_with_both_values():
    config, stored = config_from_flags({}), TrainOptions(batch_size=30)
    assert config.image_shape == (1, 8, 8)  # the default dataset's
    assert changes_on_resume(config, stored, {"epochs": 20, "backend": "torch", "batch_size": 30}) == []
    assert changes_on_resume(config, stored, {"batch_size": 64, "latent_dim": 3}) == [
        "--batch-size 64 (the run has 30)", "the model's latent_dim 3 (the run has 20)"]
