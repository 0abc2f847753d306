"""The folder that `nnUNet_extTrainer` points at (`cosam_trainer_dir`): the trainers a user picks, one
class declaration each, as nnU-Net's own variants are written. Their behaviour lives in
`cosam_nn.training`. `experiments/` keeps variants that were measured and not adopted, so that models
trained with them still load by name. nnU-Net imports these modules under their own names: absolute
imports only."""
