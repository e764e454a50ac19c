"""Training: the one loop, losses, optimisers, checkpoints, fine-tuning and pretraining entry points."""
