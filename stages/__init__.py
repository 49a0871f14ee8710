"""The pipeline's stages: one module per dvc.yaml stage, each a `tunixrt` command."""
