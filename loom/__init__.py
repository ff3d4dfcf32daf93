"""Loom: a local node-graph studio for image generation."""

__version__ = "0.1.0"
