from setuptools import find_packages, setup

setup(
    name="oslsm-repro",
    version="0.1.0",
    description="Faithful Caffe-to-PyTorch reproduction kit for OSLSM (Shaban et al., BMVC 2017)",
    packages=find_packages(include=["weights_convert", "weights_convert.*", "reproduce", "reproduce.*"]),
    package_data={"weights_convert": ["proto/*.proto"], "reproduce.training": ["recipes/*"],
                  "reproduce.data": ["reference/*.json", "reference/hsnet/*"]},
    python_requires=">=3.10",
    install_requires=[
        # The CPU wheel; a looser pin pulls a multi-GB CUDA build.
        "torch==2.13.0",
        # Generated caffe_pb2.py comes from protoc 35 (protobuf 7.35 runtime).
        "protobuf>=7.35,<8",
        "numpy>=1.24",
        "h5py",
        "pillow",
        "safetensors",
        "tqdm",
        "matplotlib",
        "scipy",  # SBD's .mat files (sbd-to-voc)
        "xxhash",  # converted files' data checksum (XXH3-128, at memory speed)
        "scikit-learn",  # the LogReg baseline (reproduce/evaluation/baselines)
    ],
    extras_require={
        "test": ["pytest", "hypothesis", "grpcio-tools==1.85.1"],
        # `export --onnx` and running .onnx files (verify); the .pt2 path needs torch alone
        "export": ["onnx", "onnxscript", "onnxruntime"],
    },
    entry_points={
        "console_scripts": [
            "oslsm-convert=weights_convert.cli:main",
            "oslsm-reproduce=reproduce.cli:main",
        ]
    },
)
