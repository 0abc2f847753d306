"""`cosam_plan_cpu`: nnU-Net's own 3D U-Net at a width a CPU can train, for comparisons at matched compute.

nnU-Net's default U-Net (32 features in its first stage, up to 320) costs about ten times a
CoSAMTrainerSmall iteration on a CPU, so there it cannot be trained to its plateau in the time CoSAM
can. nnU-Net's advice for comparing methods is matched compute, and its ResEnc presets show the way:
a planner subclass that changes the network and nothing else. `nnUNetPlannerCPU` plans exactly as
nnU-Net's default planner (same patch, batch, spacing, topology and preprocessed data), then narrows
every stage to `feature_scale` of its features (`--scale`, default a quarter; pick it so that one
iteration costs what the other method's does on the same data). Its plans are called `nnUNetCPUPlans`:

    nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres      # the default plans and the data
    cosam_plan_cpu -d 501 [--scale 0.25]                   # + nnUNetCPUPlans.json, the same data
    nnUNetv2_train 501 3d_fullres 0 -p nnUNetCPUPlans
    nnUNetv2_predict ... -p nnUNetCPUPlans

nnU-Net 2.8 looks for planners only inside its own package, so this command stands in for
`nnUNetv2_plan_experiment -pl nnUNetPlannerCPU`; it calls nnU-Net's own planning function.
"""
import argparse
import os
import sys

from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

from cosam_nn.cli_types import fraction

CPU_PLANS = "nnUNetCPUPlans"


def narrowed(features_per_stage, scale):
    """Each stage's features times `scale`, rounded, at least 4 (instance norm needs a few channels)."""
    return [max(4, int(round(f * scale))) for f in features_per_stage]


class nnUNetPlannerCPU(ExperimentPlanner):
    """nnU-Net's default plans with `feature_scale` of the features in every stage."""
    feature_scale = 0.25

    def __init__(self, dataset_name_or_id, gpu_memory_target_in_gb=8, preprocessor_name="DefaultPreprocessor",
                 plans_name=CPU_PLANS, overwrite_target_spacing=None, suppress_transpose=False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)

    def generate_data_identifier(self, configuration_name):
        return "nnUNetPlans_" + configuration_name  # the default plans' preprocessed data, shared

    def get_plans_for_configuration(self, *args, **kwargs):
        plan = super().get_plans_for_configuration(*args, **kwargs)
        arch = plan["architecture"]["arch_kwargs"]
        arch["features_per_stage"] = narrowed(arch["features_per_stage"], self.feature_scale)
        return plan


def plan_cpu(dataset_id, preprocessed_folder, scale=nnUNetPlannerCPU.feature_scale):
    """Write nnUNetCPUPlans.json for one data set, every stage at `scale` of its features; returns its path."""
    name = maybe_convert_to_dataset_name(dataset_id)
    fingerprint = os.path.join(preprocessed_folder, name, "dataset_fingerprint.json")
    if not os.path.isfile(fingerprint):
        raise SystemExit(f"cosam_plan_cpu: {fingerprint} is missing: run nnUNetv2_plan_and_preprocess -d {dataset_id} "
                         f"-c 3d_fullres first (the CPU plans share its preprocessed data)")
    planner = type("nnUNetPlannerCPU", (nnUNetPlannerCPU,), {"feature_scale": scale})  # same name in the plans
    plan_experiment_dataset(dataset_id, planner)
    return os.path.join(preprocessed_folder, name, CPU_PLANS + ".json")


def main(argv=None):
    p = argparse.ArgumentParser(prog="cosam_plan_cpu", description=__doc__.splitlines()[0])
    p.add_argument("-d", nargs="+", type=int, required=True, help="data set id(s)")
    p.add_argument("--scale", type=fraction, default=nnUNetPlannerCPU.feature_scale,
                   help="each stage's share of nnU-Net's default features, above 0 and at most 1 (default 0.25)")
    a = p.parse_args(argv)
    for variable in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(variable):
            raise SystemExit(f"cosam_plan_cpu: {variable} is not set (nnU-Net's folder variables)")
    if os.environ.get("nnUNet_n_proc_DA") == "0":
        # a training setting (no augmentation workers) that nnU-Net's planner passes to torch.set_num_threads,
        # which refuses 0; planning runs no augmentation, so the planner gets nnU-Net's default instead
        del os.environ["nnUNet_n_proc_DA"]
    for d in a.d:
        try:
            path = plan_cpu(d, os.environ["nnUNet_preprocessed"], a.scale)
        except RuntimeError as e:  # nnU-Net's 'Could not find a dataset with the ID ...' and its folders
            raise SystemExit(f"cosam_plan_cpu: data set {d}: {str(e).strip().splitlines()[0]}") from None
        print(f"{path}: nnU-Net's plans with {a.scale:g} of the features in every stage; "
              f"train and predict with -p {CPU_PLANS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
