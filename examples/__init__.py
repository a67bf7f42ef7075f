"""Example agents and programs for Stele."""
