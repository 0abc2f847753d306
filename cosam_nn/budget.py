"""The training budget every trainer of this project reads from the environment.

COSAM_EPOCHS, COSAM_ITERS and COSAM_VAL_ITERS set the number of epochs, training iterations per
epoch and validation iterations per epoch; unset, the trainer keeps nnU-Net's own values.
"""
import os

BUDGET_VARIABLES = {
    "COSAM_EPOCHS": "num_epochs",
    "COSAM_ITERS": "num_iterations_per_epoch",
    "COSAM_VAL_ITERS": "num_val_iterations_per_epoch",
}


def read_budget(environ=None):
    """{trainer attribute: value} for each budget variable that is set; a clear error if not a positive int."""
    environ = os.environ if environ is None else environ
    budget = {}
    for variable, attribute in BUDGET_VARIABLES.items():
        text = environ.get(variable, "").strip()
        if not text:
            continue
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{variable}={text!r}: must be a whole number of at least 1")
        budget[attribute] = value
    return budget


def apply_budget(trainer, environ=None):
    """Set the budget attributes on an nnU-Net trainer (call at the end of its __init__)."""
    for attribute, value in read_budget(environ).items():
        setattr(trainer, attribute, value)
