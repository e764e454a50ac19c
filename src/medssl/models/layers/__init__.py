"""Building blocks shared by backbones and decoders (one family of blocks per file)."""
