"""AudioCLIP reproduction pipeline: data, models, training, evaluation and reporting."""

__version__ = "0.1.0"
