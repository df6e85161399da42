"""Core: meshes and shardings, checkpoints, settings bound to flags, run directories, paths,
errors. Imports no other layer."""
