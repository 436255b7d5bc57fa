"""The one training loop, its configuration, checkpoints, EMA and augmentation."""
