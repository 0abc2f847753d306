import os
import zipfile

import numpy as np
import torch

from cosam_nn.check_model import main as check_main


class _RunsCode:
    """Unpickling this calls os.getpid: any callable would do, which is the danger."""

    def __reduce__(self):
        return os.getpid, ()


def _model(folder, payload):
    fold = folder / "fold_0"
    fold.mkdir(parents=True)
    (folder / "plans.json").write_text("{}")
    torch.save({"network_weights": {"w": torch.ones(2)}, "logging": {"mean_fg_dice": [np.float32(0.5)]},
                "_best_ema": np.float64(0.4), "current_epoch": 3, "init_args": {"configuration": "3d_fullres"},
                "extra": payload}, fold / "checkpoint_final.pth")
    return folder


def test_data_only_model_passes_and_code_is_caught(tmp_path, capsys):
    clean = _model(tmp_path / "clean", None)
    assert check_main([str(clean)]) == 0
    assert "1 checkpoint(s) hold data only" in capsys.readouterr().out
    bad = _model(tmp_path / "bad", _RunsCode())
    assert check_main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "UNSAFE fold_0/checkpoint_final.pth" in out and "getpid" in out


def test_zip_and_stray_code_files(tmp_path, capsys):
    model = _model(tmp_path / "m", None)
    (model / "fold_0" / "hook.py").write_text("print('hi')")
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for root, _, files in os.walk(model):
            for f in files:
                zf.write(os.path.join(root, f), os.path.relpath(os.path.join(root, f), tmp_path))
    assert check_main([str(archive)]) == 1
    assert "m/fold_0/hook.py" in capsys.readouterr().out
    os.remove(model / "fold_0" / "hook.py")
    assert check_main([str(model)]) == 0
    assert check_main([str(tmp_path / "nothing")]) == 1
    assert "not found" in capsys.readouterr().err
