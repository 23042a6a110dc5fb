"""Adapters that move bytes: MPI, ssh pipes, local pipes."""
