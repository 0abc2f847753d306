"""A non-editable install holds every module of the package (an editable one hides a missing one)."""
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED_AS = {"cosam_nn": "cosam_nn", "dataset_conversion": "cosam_nn/dataset_conversion", "trainers": "cosam_nn/trainers"}


def test_wheel_holds_every_module(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    wheel = next(f for f in os.listdir(tmp_path) if f.endswith(".whl"))
    names = set(zipfile.ZipFile(tmp_path / wheel).namelist())
    expected = set()
    for folder, installed in INSTALLED_AS.items():
        for root, _, files in os.walk(os.path.join(ROOT, folder)):
            rel = os.path.relpath(root, os.path.join(ROOT, folder))
            for f in files:
                if f.endswith(".py"):
                    expected.add(os.path.normpath(os.path.join(installed, rel, f)))
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel: {missing}"
