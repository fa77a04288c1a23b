"""Test-only backends that misbehave on purpose (see backend.py); spawned workers and Ray actors
import them from the tests folder, which the tests put on their path."""
