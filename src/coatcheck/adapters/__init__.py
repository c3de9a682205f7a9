"""Thin adapters from web frameworks to the core; only this package imports a framework."""
