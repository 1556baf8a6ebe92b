"""Convoy: synchronous data-parallel CNN training on many GPUs and machines (TensorFlow 2.18)."""

import setuptools

# Pinned together on purpose; see README "Stack" (Keras 3 cannot serve MultiWorkerMirroredStrategy
# and Horovod with TF 2.18, Horovod 0.28.1 does not build against TF >= 2.19, TFDS needs
# tensorflow-metadata 1.17 and protobuf < 6 to import with TF 2.18).
INSTALL_REQUIRES = [
    'tensorflow==2.18.1',
    'tf-keras==2.18.*',
    'ml-collections>=1.0',
    'absl-py>=2.1',
    'numpy>=1.26,<2.1',
    'scikit-learn>=1.4',
    'tensorflow-datasets==4.9.10',
    'tensorflow-metadata==1.17.*',
    'protobuf>=4.21,<6',
    'matplotlib>=3.8',
    'pillow>=10',
    # tensorflow-datasets 4.9.10 imports it but declares it only for Python < 3.9
    # (tensorflow/datasets#11212); without it `tfds build` fails.
    'importlib_resources',
]

setuptools.setup(
    name='convoy',
    version='0.1.0',
    description=__doc__,
    python_requires='>=3.9,<3.13',
    packages=setuptools.find_packages(include=['trainer*', 'input_pipeline*', 'launch*', 'configs*']),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        'test': ['pytest>=8', 'pytest-xdist>=3.6,<4'],
        # Horovod must be built against the installed TensorFlow without build isolation; `make
        # setup` does it (see README). Listed here for `pip install convoy[horovod]` users.
        'horovod': ['horovod==0.28.1'],
        'gpu': ['tensorflow[and-cuda]==2.18.1'],
    },
    entry_points={'console_scripts': ['convoy-train=trainer.train:run']},
)
