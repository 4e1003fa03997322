"""Data: synthetic scenes, image preprocessing."""
