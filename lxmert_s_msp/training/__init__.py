"""Training: the MSP curriculum and its stage runner, the `Trainer` subclasses, and fine-tuning."""
