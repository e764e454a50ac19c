"""SSL losses, one topic per file: DINO and iBOT (with Sinkhorn-Knopp centring), KoLeo, masked reconstruction,
VoCo volume contrast and Volume Fusion segmentation."""
