"""End-to-end tier: images, registry, package index (see conftest.py)."""
