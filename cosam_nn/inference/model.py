"""A trained model, opened for prediction in this process: a model folder or an exported zip, checked,
its checkpoints loaded as data only, and nnU-Net's predictor set up with it.

nnU-Net's own loader unpickles the checkpoints (`weights_only=False`) and imports whatever classes
`plans.json` names; here the model is first checked as `cosam_check_model` checks it, and its weights
are read with `weights_only=True`, so a model from someone else cannot run code on this machine. The
network is rebuilt by its trainer class, found by name among nnU-Net's trainers and this project's.
"""
import os
import zipfile

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json

from cosam_nn.check_model import check_folder, safe_globals
from cosam_nn.trainer_dir import trainer_dir

CHECKPOINT = "checkpoint_final.pth"


class ModelError(ValueError):
    """A model that cannot be used; the message names it and the problem."""


def _is_model_folder(folder):
    return os.path.isfile(os.path.join(folder, "plans.json")) and os.path.isfile(os.path.join(folder, "dataset.json")) \
        and any(d.startswith("fold_") for d in os.listdir(folder))


def extract_zip(path, target):
    """Unpack an exported model zip (`nnUNetv2_export_model_to_zip`) into `target`; returns the model
    folder inside. Members that would land outside `target` are refused."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"{path}: not a readable model zip ({e})") from None
    root = os.path.realpath(target)
    with archive:
        for member in archive.namelist():
            where = os.path.realpath(os.path.join(root, member))
            if os.path.commonpath([root, where]) != root:
                raise ModelError(f"{path}: member {member!r} would be written outside the folder it is unpacked into")
        archive.extractall(root)
    found = [d for d, _, _ in os.walk(root) if _is_model_folder(d)]
    if len(found) != 1:
        raise ModelError(f"{path}: holds {len(found)} model folders (plans.json, dataset.json and fold_*); "
                         f"give one configuration's model")
    return found[0]


def open_model(path, workdir):
    """The model folder of `path` (a folder, or a zip unpacked into `workdir`), checked: every
    checkpoint loads as data only and plans.json names only allowed classes."""
    if os.path.isfile(path) and zipfile.is_zipfile(path):
        folder = extract_zip(path, workdir)
    elif os.path.isdir(path):
        folder = path
    else:
        raise ModelError(f"{path}: not a model folder or an exported model zip")
    if not _is_model_folder(folder):
        raise ModelError(f"{folder}: not a trained model folder (plans.json, dataset.json and fold_* expected)")
    _, problems = check_folder(folder)
    if problems:
        raise ModelError(f"{path}: not safe to load ({problems[0]}); see cosam_check_model")
    return folder


def available_folds(folder, checkpoint=CHECKPOINT):
    folds = sorted(d for d in os.listdir(folder) if d.startswith("fold_")
                   and os.path.isfile(os.path.join(folder, d, checkpoint)))
    if not folds:
        raise ModelError(f"{folder}: no fold holds {checkpoint} (has the training finished?)")
    return [d[len("fold_"):] for d in folds]


def load_checkpoint(path):
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler's refusals and file errors come as several types
        raise ModelError(f"{path}: cannot be loaded as data only ({str(e).strip().splitlines()[0][:200]})") from None


def trainer_class(name):
    """A trainer class by name, among nnU-Net's and this project's (`nnUNet_extTrainer` is extended)."""
    paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if trainer_dir() not in paths:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([trainer_dir()] + paths)
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    try:
        return recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        raise ModelError(f"trainer {name!r} of this model is neither nnU-Net's nor this project's") from None


def load_predictor(folder, folds=None, device=torch.device("cpu"), tta=True, predictor_class=None):
    """nnU-Net's predictor (or `predictor_class`) holding this model's network and weights."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folds = folds or available_folds(folder)
    checkpoints = []
    for fold in folds:
        path = os.path.join(folder, f"fold_{fold}", CHECKPOINT)
        if not os.path.isfile(path):
            raise ModelError(f"{folder}: fold {fold} has no {CHECKPOINT}")
        checkpoints.append(load_checkpoint(path))
    first = checkpoints[0]
    dataset_json, plans = load_json(os.path.join(folder, "dataset.json")), load_json(os.path.join(folder, "plans.json"))
    plans_manager = PlansManager(plans)
    configuration = plans_manager.get_configuration(first["init_args"]["configuration"])
    cls = trainer_class(first["trainer_name"])
    network = cls.build_network_architecture(plans_manager, configuration,
                                             determine_num_input_channels(plans_manager, configuration, dataset_json),
                                             plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
                                             enable_deep_supervision=False)
    network.load_state_dict(first["network_weights"])
    predictor = (predictor_class or nnUNetPredictor)(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=tta, device=device, allow_tqdm=False,
        perform_everything_on_device=device.type == "cuda")
    predictor.manual_initialization(network, plans_manager, configuration, [c["network_weights"] for c in checkpoints],
                                    dataset_json, first["trainer_name"], first.get("inference_allowed_mirroring_axes"))
    return predictor


def pick_device(name, prog):
    """--device auto|cpu|cuda as a torch device; auto takes the GPU when there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"{prog}: --device cuda: no CUDA GPU is available")
    return torch.device(name)


def count_threshold(predictor, override=None):
    """The confidence from which a node counts, and where it came from: `override` (--threshold), else
    the model's calibrated threshold, else 0.5."""
    if override is not None:
        return override, "--threshold"
    if hasattr(predictor.network, "score_threshold"):
        return round(float(predictor.network.score_threshold), 4), "the model's calibrated threshold"
    return 0.5, "default 0.5 (the model carries no threshold)"
