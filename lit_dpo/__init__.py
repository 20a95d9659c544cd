"""lit_dpo: Direct Preference Optimization as a PyTorch Lightning module and recipes."""

__version__ = "0.1.0"
