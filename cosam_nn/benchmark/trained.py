"""A trained fold as the diagnostics read it: its network with weights, and its validation or test
cases preprocessed with its plans."""
import os

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

from cosam_nn.modeling.cosam import CoSAM
from cosam_nn.trainer_dir import trainer_dir


def load_model(fold_folder, trainer_name, checkpoint="checkpoint_final.pth"):
    trainer = recursive_find_python_class(trainer_dir(), trainer_name, "cosam_nn.trainers")
    model = CoSAM(trainer.cosam_config())
    # nnU-Net's checkpoints carry numpy training logs, which weights_only=True refuses; nnU-Net loads
    # them this way too. Only point this at checkpoints you trained yourself.
    ckpt = torch.load(os.path.join(fold_folder, checkpoint), map_location="cpu", weights_only=False)
    model.load_state_dict(ckpt["network_weights"])
    return model.eval()


def validation_cases(fold_folder):
    model_folder = os.path.dirname(fold_folder)
    plans = load_json(os.path.join(model_folder, "plans.json"))
    dataset = plans["dataset_name"]
    pre = os.path.join(os.environ["nnUNet_preprocessed"], dataset)
    fold = int(os.path.basename(fold_folder).split("_")[1])
    val = load_json(os.path.join(pre, "splits_final.json"))[fold]["val"]
    spacing = plans["configurations"]["3d_fullres"]["spacing"]
    for case, image, nodes in preprocessed_cases(pre, plans, val):
        yield case, image, nodes, spacing


def preprocessed_cases(dataset_folder, plans, keys):
    """(case, image (Z, Y, X) float32, node mask bool) of each key, from an nnU-Net preprocessed
    dataset folder (3d_fullres)."""
    data_folder = os.path.join(dataset_folder, plans["configurations"]["3d_fullres"]["data_identifier"])
    ds = infer_dataset_class(data_folder)(data_folder, keys)
    for case in keys:
        data, seg, _, _ = ds.load_case(case)
        yield case, np.asarray(data[0], dtype=np.float32), np.asarray(seg[0]) > 0


def test_cases(fold_folder, images_folder, labels_folder, max_cases=None):
    """Raw nnU-Net test cases (CASE_0000.nii.gz + CASE.nii.gz), preprocessed with the fold's plans."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model_folder = os.path.dirname(fold_folder)
    plans = PlansManager(os.path.join(model_folder, "plans.json"))
    config = plans.get_configuration("3d_fullres")
    dataset_json = load_json(os.path.join(model_folder, "dataset.json"))
    ending = dataset_json["file_ending"]
    cases = sorted(f[:-len(ending)] for f in os.listdir(labels_folder) if f.endswith(ending))[:max_cases]
    for case in cases:
        data, seg, _ = DefaultPreprocessor(verbose=False).run_case(
            [os.path.join(images_folder, f"{case}_0000{ending}")], os.path.join(labels_folder, case + ending),
            plans, config, dataset_json)
        yield case, np.asarray(data[0], dtype=np.float32), np.asarray(seg[0]) > 0, config.spacing
