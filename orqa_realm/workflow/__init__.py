"""Pipelines of commands: stages run as subprocesses, skipped when their output is complete."""
