"""Helpers for the text-based decomposition of CLIP course."""
