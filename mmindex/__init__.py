"""mmindex: make a multimodal corpus searchable across images, audio and text."""

__version__ = "0.1.0"
