"""rotnet: RotNet (Gidaris et al., ICLR 2018) as a reproducible ablation workflow.

The core modules need only torch, torchvision and numpy; MLflow is imported by
the tracking layer alone (`tracking`, `tracked_run`, `run_groups`), and DVC is used only by
the pipeline layer: `repro`, `dvc_cli`, `ablation`, `offline_plots` (`code_digest` writes what
its stages depend on). docs/architecture.md maps every module.
"""

__version__ = "0.1.0"
