"""`cosam_trainer_dir`: print the folder of trainer modules for nnU-Net's `nnUNet_extTrainer`."""
import os


def trainer_dir():
    import cosam_nn.trainers
    return os.path.dirname(os.path.abspath(cosam_nn.trainers.__file__))


def main(argv=None):
    print(trainer_dir())
    return 0
