"""Gradual: an online-learning service for PyTorch models."""
