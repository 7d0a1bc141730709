"""Helpers shared by the Python tools in tools/ (converters, prompt encoder, VAE decoder).

The tools are for users who hold the official Wan2.1 / UltraGen weights and have PyTorch; the C# side never imports
them. Everything here needs only torch (and numpy, which torch depends on).
"""
