"""Training data: dataset readers (300-W, AFLW-Full), the synthetic face generator, augmentation and PDB."""
