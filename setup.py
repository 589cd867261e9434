from setuptools import find_packages, setup

setup(
    name="sdfl-testbed",
    version="0.1.0",
    description="Network-emulation testbed for secure decentralized federated learning across SDN domains",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["common", "sdfl", "sdfl.*", "topologies", "controllers", "agents", "attacks"]),
    install_requires=[
        # CPU build; a bare "torch" would pull GBs of CUDA wheels.
        "torch==2.13.0",
        # os-ken 4.x dropped osken-manager; Ryu itself does not import on Python >= 3.10.
        "os-ken>=3,<4",
        "river>=0.21",
        "scapy>=2.5",
        "numpy>=1.24",
        "scikit-learn>=1.2",  # ships the digits data set: nothing is downloaded at run time
        "scipy>=1.10",  # the sweep report's significance tests
        "matplotlib>=3.6",  # report plots, headless
        "pytest>=7",
        "hypothesis>=6",  # the parsers' fuzz tests
        "psutil>=5.9",  # a run's CPU and memory, by role
        "cryptography>=38",  # Ed25519 signatures of the domains' decisions (controllers/ledger.py)
    ],
    # sdfl sweep --ray: cells as tasks on a Ray cluster (pip install -e .[cluster])
    extras_require={"cluster": ["ray>=2.9"]},
    entry_points={"console_scripts": ["sdfl=sdfl.cli:main"]},
)
