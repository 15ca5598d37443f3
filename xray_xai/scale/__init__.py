"""Running at scale: Ray Data for explain and cluster, torchrun (DDP) for training."""
