import json
import os

import numpy as np
import pytest

from twinvae import run_folder
from twinvae.run_folder import Position
from vae_core.checkpoint import CheckpointError
from vae_core.checkpoint_test import flip_bit
from vae_core.config import VAEConfig
from vae_core.layout import init_weights

CONFIG = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=2)


def _unit(step: int, seed: int = 0):
    weights = init_weights(CONFIG, seed)
    optimizer = {"step": np.asarray(step, np.int64), **{f"{m}.{k}": np.zeros_like(v) for k, v in weights.items()
                                                       for m in ("exp_avg", "exp_avg_sq")}}
    return weights, optimizer, Position(epoch=step // 5, batch=step % 5, step=step)


def test_a_unit_round_trips_and_keeps_the_one_before(tmp_path):
    run_folder.save_unit(tmp_path, *_unit(5), CONFIG)
    run_folder.save_unit(tmp_path, *_unit(10, seed=1), CONFIG)
    unit = run_folder.read_unit(tmp_path, CONFIG, say=print)
    assert unit.position.step == 10 and unit.path == tmp_path / run_folder.TRAIN_STATE
    assert np.array_equal(unit.weights["fc_mu.weight"], init_weights(CONFIG, 1)["fc_mu.weight"])
    assert run_folder.read_train_state(tmp_path / run_folder.PREVIOUS_STATE).position.step == 5


def test_a_corrupt_unit_falls_back_to_the_one_before_and_says_so(tmp_path):
    run_folder.save_unit(tmp_path, *_unit(5), CONFIG)
    run_folder.save_unit(tmp_path, *_unit(10), CONFIG)
    flip_bit(tmp_path / run_folder.TRAIN_STATE, "model.fc_mu.weight")
    said = []
    unit = run_folder.read_unit(tmp_path, CONFIG, say=said.append)
    assert unit.position.step == 5
    assert "tensor 'model.fc_mu.weight' does not match its SHA-256 checksum" in said[0]
    assert "resuming from the unit before it" in said[0]
    flip_bit(tmp_path / run_folder.PREVIOUS_STATE, "exp_avg.fc_mu.weight")
    with pytest.raises(ValueError, match="no readable checkpoint to resume from: .*model.fc_mu.weight.*; "
                                         ".*exp_avg.fc_mu.weight"):
        run_folder.read_unit(tmp_path, CONFIG, say=said.append)


def test_non_finite_state_is_never_saved(tmp_path):
    run_folder.save_unit(tmp_path, *_unit(5), CONFIG)
    weights, optimizer, position = _unit(10)
    optimizer["exp_avg_sq.fc_mu.weight"][0, 0] = np.inf
    with pytest.raises(ValueError, match=r"Adam's state 'exp_avg_sq.fc_mu.weight' holds NaN or inf at step 10"):
        run_folder.save_unit(tmp_path, weights, optimizer, position, CONFIG)
    assert run_folder.read_unit(tmp_path, CONFIG, say=print).position.step == 5
    assert not (tmp_path / run_folder.PREVIOUS_STATE).exists()


def test_a_unit_of_another_model_names_the_file(tmp_path):
    run_folder.save_unit(tmp_path, *_unit(5), CONFIG)
    other = VAEConfig(image_shape=(1, 8, 8), conv_channels=(4,), latent_dim=3)
    with pytest.raises(CheckpointError, match=f"training state {tmp_path / run_folder.TRAIN_STATE} was written "
                                              "for another model"):
        run_folder.read_train_state(tmp_path / run_folder.TRAIN_STATE, other)


def test_a_torn_last_log_line_is_dropped_and_a_damaged_one_named(tmp_path):
    records = [{"epoch": e, "step": 5 * e} for e in (1, 2, 3)]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (tmp_path / run_folder.LOG).write_text(text + '{"epoch": 4, "st')
    said = []
    assert run_folder.trim_log(tmp_path, 2, say=said.append) == records[:2]
    assert said == [f"warning: {tmp_path / run_folder.LOG}: its last line is torn (a crash while it was "
                    "written); dropped"]
    assert (tmp_path / run_folder.LOG).read_text() == "".join(json.dumps(r) + "\n" for r in records[:2])
    (tmp_path / run_folder.LOG).write_text('{"epoch": 1\n' + text)
    with pytest.raises(ValueError, match=f"{tmp_path / run_folder.LOG}, line 1: not a JSON record"):
        run_folder.read_log(tmp_path)


def test_the_lock_records_its_holder_and_refuses_a_second(tmp_path):
    with run_folder.RunLock(tmp_path):
        assert (tmp_path / run_folder.LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(run_folder.RunInUse, match=rf"in use by another twinvae process \(PID {os.getpid()}\)"):
            run_folder.RunLock(tmp_path).__enter__()
    with run_folder.RunLock(tmp_path):  # released: taken again
        pass
