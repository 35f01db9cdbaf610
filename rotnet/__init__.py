"""rotnet: RotNet (Gidaris et al., ICLR 2018) as a reproducible ablation workflow.

The core modules need only torch, torchvision and numpy; MLflow is imported by
`rotnet.tracking` alone, DVC only by the stage scripts and `rotnet ablate`.
"""

__version__ = "0.1.0"
