"""CLIP4VLA reproducibility suite: the dataset-agnostic library (model, media, losses, loop, metrics, tracking).

Heavy dependencies (torch, open_clip, mlflow, pycocoevalcap) are imported inside the modules that need them so
that `import benchmark` and `clip4vla --help` stay fast.
"""

__version__ = "0.1.0"
