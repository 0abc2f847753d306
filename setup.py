"""cosam-nn: CoSAM (2.5D sequence detector + U-SAM) as an nnU-Net v2 plugin.

`dataset_conversion/` and `trainers/` live at the top of the repository (the design card's layout)
but are installed as `cosam_nn.dataset_conversion` and `cosam_nn.trainers`, so that no generic
top-level names land in site-packages.
"""
from setuptools import setup

setup(
    name="cosam-nn",
    version="0.1.0",
    description="CoSAM metastatic perirectal lymph node detection and segmentation for nnU-Net v2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["cosam_nn", "cosam_nn.data", "cosam_nn.evaluation", "cosam_nn.modeling", "cosam_nn.training", "cosam_nn.inference",
              "cosam_nn.benchmark", "cosam_nn.dataset_conversion", "cosam_nn.trainers", "cosam_nn.trainers.experiments"],
    package_dir={
        "cosam_nn": "cosam_nn",
        "cosam_nn.dataset_conversion": "dataset_conversion",
        "cosam_nn.trainers": "trainers",
    },
    install_requires=[
        "nnunetv2>=2.8,<2.9",
        "torch>=2.1",
        "torchvision",
        "segment-anything",
        "SimpleITK>=2.2",
        "batchgenerators>=0.25",
        "numpy",
        "scipy",
        "scikit-image",
        "matplotlib",
    ],
    extras_require={"test": ["pytest", "highdicom>=0.22", "pydicom>=2.4"],
                    "dicom": ["highdicom>=0.22", "pydicom>=2.4"]},
    entry_points={
        "console_scripts": [
            "cosam_make_synthetic=cosam_nn.data.synthetic:main",
            "cosam_convert_meply=cosam_nn.dataset_conversion.Dataset501_Meply:main",
            "cosam_trainer_dir=cosam_nn.trainer_dir:main",
            "cosam_demo=cosam_nn.demo:main",
            "cosam_evaluate=cosam_nn.evaluation.evaluate:main",
            "cosam_report=cosam_nn.evaluation.report:main",
            "cosam_check_model=cosam_nn.check_model:main",
            "cosam_dicom_input=cosam_nn.data.dicom_input:main",
            "cosam_export_dicom=cosam_nn.evaluation.dicom_export:main",
            "cosam_postprocess=cosam_nn.evaluation.postprocess:main",
            "cosam_plan_cpu=cosam_nn.training.cpu_planner:main",
            "cosam_predict=cosam_nn.inference.predict:main",
            "cosam_segment=cosam_nn.inference.segment:main",
        ]
    },
)
