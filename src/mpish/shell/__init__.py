"""The MPI remote shell: shell servers (per-rank persistent state) and the console."""
