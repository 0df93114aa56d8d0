"""Training LXMERT-S with the MSP curriculum on top of the transformers `Trainer`."""
