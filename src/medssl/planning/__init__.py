"""Pretraining data planning: dataset fingerprint -> plan -> preprocessed-volume cache (nnU-Net's split of
measured statistics, decisions and the deterministic preprocessing, applied to unlabelled volumes)."""
