import pytest

from cosam_nn import demo
from cosam_nn.demo import Pipeline, dice_table


def test_steps_record_time_and_peak_memory_and_stop_on_failure(tmp_path):
    pipe = Pipeline(str(tmp_path / "work"), log=lambda *_: None)
    seconds = pipe.run("trainer folder", ["cosam_trainer_dir"])
    assert seconds >= 0 and pipe.last_peak_mib > 1  # a Python process takes more than 1 MiB
    with pytest.raises(SystemExit, match="step 'bad input' failed"):
        pipe.run("bad input", ["cosam_convert_meply", str(tmp_path / "missing"), "-d", "999"])


def test_dice_table_mean_leaves_out_cases_without_nodes():
    def case(ref, pred, dice):
        return {"reference_voxels": ref, "predicted_voxels": pred, "dice": dice}
    table = dice_table({"a": case(10, 10, 0.5), "b": case(0, 0, None), "c": case(4, 0, 0.0)})
    assert "mean         Dice 0.250 over 2 case(s)" in table
    assert "b            reference voxels      0  predicted      0  Dice -" in table


@pytest.mark.parametrize("argv, seed", [([], 0), (["--seed", "5"], 5)])
def test_demo_trains_with_a_fixed_seed(tmp_path, monkeypatch, argv, seed):
    """The demo's model is reproducible: its training always gets a COSAM_SEED (0 unless asked)."""
    trained = {}

    class Stop(Exception):
        pass

    def train(self, trainer, epochs, iters, seed=None, **_):
        trained.update(trainer=trainer, seed=seed)
        raise Stop

    monkeypatch.setattr(Pipeline, "prepare", lambda self, *a, **k: None)
    monkeypatch.setattr(Pipeline, "train", train)
    with pytest.raises(Stop):
        demo.main(["--work", str(tmp_path / "work")] + argv)
    assert trained == {"trainer": "CoSAMTrainerSmall", "seed": seed}
