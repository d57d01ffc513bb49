"""Packaging for diffjax: diffusion models in JAX, one config per paper."""
from setuptools import find_packages, setup

CORE = [
    "jax>=0.6",
    "flax>=0.11",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "chex>=0.1.88",
    "ml-collections>=1.0",
    "einops>=0.8",
    "diffrax>=0.6",
    "numpy>=1.26",
    "matplotlib>=3.8",
    "tqdm>=4.66",
    "scikit-learn>=1.4",
    "absl-py>=2.1",
]
DATA = ["tensorflow-datasets>=4.9.7", "grain>=0.2.10"]
# Text (MLKD): Hugging Face checkpoint formats, byte-level BPE, and the real text that ships in
# registry packages (gensim's test corpora, chatterbot-corpus) for the offline OOD benchmark.
TEXT = ["safetensors>=0.4", "tokenizers>=0.15", "gensim>=4.3", "chatterbot-corpus>=1.2", "pyyaml>=6", "pyarrow>=14"]
DEV = ["pytest>=8", "pytest-xdist>=3.5", "nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6.29"]

setup(
    name="diffjax",
    version="0.1.0",
    description="Diffusion models in JAX/Flax: processes, samplers, losses and paper reproductions.",
    packages=find_packages(include=["diffjax", "diffjax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"data": DATA, "text": TEXT, "dev": DEV, "all": DATA + TEXT + DEV},
)
