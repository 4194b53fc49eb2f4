"""Training, evaluation and dataset adapters for afiqa (not part of the installed package)."""
