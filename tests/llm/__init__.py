"""Tests of the model providers and their wire formats."""
