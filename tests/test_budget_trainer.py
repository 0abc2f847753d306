import os

import pytest

from cosam_nn.trainer_dir import trainer_dir
from cosam_nn.training.run_settings import (RunSettingsMixin, checkpoint_interval, read_budget, read_seed,
                                            read_snapshots)


class _Base:
    """What RunSettingsMixin needs of nnUNetTrainer."""

    def __init__(self, *args):
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1000, 250, 50
        self.save_every, self.current_epoch, self.output_folder, self.saved = 50, 0, "", []

    def on_epoch_end(self):
        self.current_epoch += 1

    def save_checkpoint(self, filename):
        self.saved.append((os.path.basename(filename), self.current_epoch + 1))  # as nnU-Net stores it


class _Trainer(RunSettingsMixin, _Base):
    pass


def test_budget_reads_the_three_variables(monkeypatch):
    env = {"COSAM_EPOCHS": "3", "COSAM_ITERS": "7", "COSAM_VAL_ITERS": " 2 "}
    assert read_budget(env) == {"num_epochs": 3, "num_iterations_per_epoch": 7, "num_val_iterations_per_epoch": 2}
    assert read_budget({}) == {}
    for variable in ("COSAM_EPOCHS", "COSAM_VAL_ITERS", "COSAM_SEED", "COSAM_SNAPSHOTS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("COSAM_ITERS", "5")
    t = _Trainer({}, "3d_fullres", 0, {})  # reads the environment around nnUNetTrainer.__init__
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch) == (1000, 5, 50)
    monkeypatch.setenv("COSAM_ITERS", "five")
    with pytest.raises(SystemExit, match="_Trainer: COSAM_ITERS='five'"):
        _Trainer({}, "3d_fullres", 0, {})


@pytest.mark.parametrize("value", ["0", "-2", "ten", "1.5"])
def test_bad_budget_names_the_variable(value):
    with pytest.raises(ValueError, match="COSAM_EPOCHS"):
        read_budget({"COSAM_EPOCHS": value})


def test_trainer_found_through_nnunet_ext_trainer(monkeypatch):
    import nnunetv2.utilities.find_objects as find_objects
    from nnunetv2.paths import nnUNet_extTrainer
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    monkeypatch.setenv("nnUNet_extTrainer", trainer_dir())
    assert nnUNet_extTrainer.get() == trainer_dir()
    cls = find_objects.recursive_find_trainer_class_by_name("nnUNetTrainerBudget")
    assert cls.__name__ == "nnUNetTrainerBudget" and issubclass(cls, nnUNetTrainer)
    # models trained with an experiment variant still load by its name: nnU-Net searches experiments/ too
    cls = find_objects.recursive_find_trainer_class_by_name("CoSAMTrainerSmall_lowPresence")
    assert cls.model_settings == {"presence_threshold": 0.35} and cls.__module__ == "experiments.CoSAMTrainer_experiments"
    monkeypatch.delenv("nnUNet_extTrainer")
    with pytest.raises(RuntimeError):
        find_objects.recursive_find_trainer_class_by_name("nnUNetTrainerBudget")


def test_seed_snapshots_and_checkpoint_interval_are_read():
    assert read_seed({}) is None and read_seed({"COSAM_SEED": " 7 "}) == 7
    assert read_snapshots({}) == set() and read_snapshots({"COSAM_SNAPSHOTS": "1, 4,2,"}) == {1, 2, 4}
    for env in ({"COSAM_SEED": "x"}, {"COSAM_SEED": "-1"}, {"COSAM_SNAPSHOTS": "1,0"}, {"COSAM_SNAPSHOTS": "a"}):
        with pytest.raises(ValueError, match=list(env)[0]):
            read_seed(env) if "COSAM_SEED" in env else read_snapshots(env)
    # a short budget still writes checkpoint_latest.pth: at least every tenth of the run
    assert checkpoint_interval(8, 50) == 1 and checkpoint_interval(40, 50) == 4 and checkpoint_interval(1000, 50) == 50


def test_snapshot_is_saved_after_its_epoch_with_the_epoch_to_resume_at():
    t = object.__new__(_Trainer)
    _Base.__init__(t)
    t.apply_run_settings({"COSAM_EPOCHS": "4", "COSAM_SNAPSHOTS": "1,3", "COSAM_SEED": "5"})
    assert t.num_epochs == 4 and t.save_every == 1 and t.seed == 5
    for _ in range(4):
        t.on_epoch_end()
    assert t.saved == [("checkpoint_epoch1.pth", 1), ("checkpoint_epoch3.pth", 3)] and t.current_epoch == 4


def test_the_trainer_folder_holds_class_declarations_only():
    """Behaviour lives in cosam_nn.training; a trainer a user picks only sets class attributes."""
    import importlib
    import inspect
    import pkgutil

    import cosam_nn.trainers as folder
    modules = [m.name for m in pkgutil.walk_packages(folder.__path__, "cosam_nn.trainers.")]
    declared = 0
    for name in modules:
        module = importlib.import_module(name)
        for cls in (c for _, c in inspect.getmembers(module, inspect.isclass) if c.__module__ == name):
            declared += 1
            behaviour = [k for k, v in vars(cls).items() if callable(v) or isinstance(v, (classmethod, staticmethod))]
            assert behaviour == [], f"{name}.{cls.__name__} defines {behaviour}"
    assert declared >= 25
