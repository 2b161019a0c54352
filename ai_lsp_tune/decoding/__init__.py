"""Constrained decoding of the answer schema (llguidance), shared by serving and evaluation."""
