import pytest

from cosam_nn.budget import apply_budget, read_budget
from cosam_nn.trainer_dir import trainer_dir


def test_budget_reads_the_three_variables():
    env = {"COSAM_EPOCHS": "3", "COSAM_ITERS": "7", "COSAM_VAL_ITERS": " 2 "}
    assert read_budget(env) == {"num_epochs": 3, "num_iterations_per_epoch": 7, "num_val_iterations_per_epoch": 2}
    assert read_budget({}) == {}

    class Trainer:
        num_epochs, num_iterations_per_epoch, num_val_iterations_per_epoch = 1000, 250, 50

    t = Trainer()
    apply_budget(t, {"COSAM_ITERS": "5"})
    assert (t.num_epochs, t.num_iterations_per_epoch, t.num_val_iterations_per_epoch) == (1000, 5, 50)


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
    monkeypatch.delenv("nnUNet_extTrainer")
    with pytest.raises(RuntimeError):
        find_objects.recursive_find_trainer_class_by_name("nnUNetTrainerBudget")
