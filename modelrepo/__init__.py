"""modelrepo: a Triton Inference Server model repository and its tooling."""

__version__ = "0.1.0"
