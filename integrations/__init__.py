"""Integrations with the SDKs agents are made of, as journaled effects (optional extras)."""
