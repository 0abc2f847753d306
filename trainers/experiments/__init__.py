"""Variants measured and not adopted (bench/RESULTS.md and its archive say what each did). Kept so
that models trained with them still load by name; not for new trainings."""
