"""Core: meshes and shardings, checkpoints, settings bound to flags, errors. Imports no other layer."""
