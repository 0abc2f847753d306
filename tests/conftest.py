import os

# nnU-Net reads these when it is imported: one process on the 2-core test machines
os.environ.setdefault("nnUNet_def_n_proc", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def nnunet_env(tmp_path, monkeypatch):
    """nnU-Net's three folders in tmp_path, set for this process and returned for subprocesses."""
    env = {"nnUNet_raw": str(tmp_path / "nnUNet_raw"),
           "nnUNet_preprocessed": str(tmp_path / "nnUNet_preprocessed"),
           "nnUNet_results": str(tmp_path / "nnUNet_results")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def run_cli(args, env_extra=None, check=True, timeout=900):
    """Run a console script of the installed package (or nnU-Net) and return the CompletedProcess."""
    env = dict(os.environ)
    env.update(env_extra or {})
    bin_dir = os.path.dirname(sys.executable)
    exe = os.path.join(bin_dir, args[0])
    proc = subprocess.run([exe] + list(args[1:]), env=env, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def make_planned_dataset(tmp_path, env, dataset_id, cases=6, shape=(16, 48, 48), seed=11):
    """Synthetic cases -> cosam_convert_meply -> nnUNetv2_plan_and_preprocess (3d_fullres); returns the
    plan-and-preprocess output."""
    syn = str(tmp_path / "syn")
    run_cli(["cosam_make_synthetic", syn, "--cases", str(cases), "--seed", str(seed), "--shape", *map(str, shape)])
    run_cli(["cosam_convert_meply", syn, "-d", str(dataset_id)], env)
    return run_cli(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", "3d_fullres",
                    "--verify_dataset_integrity", "-np", "1", "-npfp", "1", "--no_pbar"], env)
